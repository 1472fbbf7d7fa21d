#!/usr/bin/env bash
# `make demo`: nginx with ngx_http_ase_module and the reference ABS server on
# loopback, the sample configuration of examples/demo/, and a short scenario
# played with curl that says what was allowed, what was blocked and why.
# Everything it starts is stopped on exit; DEMO_KEEP=1 leaves it running and
# prints how to stop it.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
rel=$root/target/release
module=$root/target/nginx/ngx_http_ase_module.so
nginx=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
work=$root/target/demo
cli_bin=$rel/ase-cli
abs_bin=$rel/ase-abs-ref

[ -f "$module" ] || "$root/scripts/nginx-module.sh" build

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- a fresh copy of the sample configuration --------------------------------
if [ -f "$work/nginx.pid" ] && kill -0 "$(cat "$work/nginx.pid")" 2>/dev/null; then
    kill -QUIT "$(cat "$work/nginx.pid")" || true
    sleep 0.5
fi
rm -rf "$work"
mkdir -p "$work/logs" "$work/tmp"
cp -r "$root/examples/demo" "$work/conf"
rm -rf "$work/conf/state"
port=$(free_port)
backend=$(free_port)

pids=()
cleanup() {
    if [ "${DEMO_KEEP:-0}" = 1 ]; then
        echo
        echo "left running: nginx (kill -QUIT \$(cat $work/nginx.pid))${pids[*]:+, ase-abs-ref (kill ${pids[*]})}"
        return
    fi
    [ -f "$work/nginx.pid" ] && kill -QUIT "$(cat "$work/nginx.pid")" 2>/dev/null || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# --- the reference ABS server: its attack list names 203.0.113.5 --------------
abs_ip=203.0.113.5
if [ -x "$abs_bin" ]; then
    echo "{\"ips\": [\"$abs_ip\"]}" >"$work/attacklist.json"
    "$abs_bin" --attacklist "$work/attacklist.json" --listen 127.0.0.1:0 \
        --access-key demo_access --secret-key demo_secret \
        >"$work/logs/abs.out" 2>"$work/logs/abs.err" &
    pids+=($!)
    for _ in $(seq 50); do
        grep -q "listening on" "$work/logs/abs.out" && break
        sleep 0.1
    done
    abs_addr=$(sed -n 's/^listening on //p' "$work/logs/abs.out")
    sed -i "s/^abs_endpoint=.*/abs_endpoint=$abs_addr/" "$work/conf/abs.conf"
else
    abs_addr=""
fi

user=""
[ "$(id -u)" -eq 0 ] && user="user root;"
cat >"$work/nginx.conf" <<EOF
load_module $module;
$user
worker_processes 2;
error_log $work/logs/error.log notice;
pid $work/nginx.pid;
events { worker_connections 256; }
http {
    client_body_temp_path $work/tmp/body;
    proxy_temp_path $work/tmp/proxy;
    fastcgi_temp_path $work/tmp/fastcgi;
    uwsgi_temp_path $work/tmp/uwsgi;
    scgi_temp_path $work/tmp/scgi;
    log_format ase '\$remote_addr "\$request" \$status \$ase_verdict';
    access_log $work/logs/access.log ase;

    ase_config $work/conf/ase.conf;
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;

    server {
        listen 127.0.0.1:$port;
        ase on;
        add_header X-ASE-Verdict \$ase_verdict always;
        location / { proxy_pass http://127.0.0.1:$backend; }
        location = /ase_status { ase off; ase_status; }
    }
    server {
        listen 127.0.0.1:$backend;
        ase off;
        access_log off;
        location / { return 200 "backend: ok\n"; }
    }
}
EOF
"$nginx" -t -q -p "$work/" -c "$work/nginx.conf"
"$nginx" -p "$work/" -c "$work/nginx.conf"

base=http://127.0.0.1:$port
echo "ase demo: nginx on $base (config $work/conf/ase.conf)${abs_addr:+, ABS on $abs_addr}"
echo

step() { printf '\n%s\n' "$*"; }

# One client, one connection: each "METHOD PATH [curl args] -- why" step is
# sent in turn (curl --next reuses the connection) and printed with its status
# and $ase_verdict (curl's -w %header{}, curl >= 7.84).
client() {
    local ip=$1; shift
    local args=() first=1
    while [ $# -gt 0 ]; do
        local method=$1 path=$2; shift 2
        local extra=()
        while [ "$1" != "--" ]; do extra+=("$1"); shift; done
        shift
        local why=$1; shift
        [ $first = 1 ] || args+=(--next)
        first=0
        local fixed
        fixed=$(printf '  %-14s %-6s %-24s' "$ip" "$method" "$path")
        args+=(-s -o /dev/null -X "$method" -H "X-Forwarded-For: $ip"
               "${extra[@]}"
               -w "$fixed -> %{http_code} %header{x-ase-verdict}  ($why)\n"
               "$base$path")
    done
    curl "${args[@]}"
}

step "1. An ordinary client uses the shop API:"
client 198.51.100.10 \
    GET /shop/items -- "allowed" \
    POST /shop/cart -H "Content-Type: application/json" -d '{}' -- "allowed"

step "2. An attacker probes an in-context decoy path, then calls the real API:"
client 198.51.100.66 \
    GET /shop/admin -- "decoy answer; the IP goes on the decoy deny list" \
    GET /shop/items -- "blocked: 403 Error: Unauthorized"

step "3. A scanner hits an out-of-context decoy API (/wp-admin):"
client 198.51.100.77 \
    GET /wp-admin/setup.php -- "decoy answer (404)" \
    GET /partner/orders -- "blocked everywhere now"

step "4. API pattern enforcement (the shop API allows GET/POST, JSON):"
client 198.51.100.20 \
    DELETE /shop/items/1 -- "method not allowed: the API's error response" \
    GET /shop/items -- "blocked: the IP is on invalid_method"
client 198.51.100.21 \
    POST /shop/items -H "Content-Type: text/xml" -d '<x/>' -- "content type not allowed"
client 198.51.100.22 \
    GET /tls/data -- "plain HTTP to an HTTPS-only API: error response"
client 198.51.100.23 \
    GET /secure/login -- "HTTPS-only API with http_redirect: 301 to https://"

step "5. Monitor mode (/monitor has enable_blocking:false): recorded, not blocked:"
client 198.51.100.30 \
    DELETE /monitor/item -- "would have been blocked; allowed"

step "6. A manual deny-list entry (ase-cli, shared by every worker):"
if [ -x "$cli_bin" ]; then
    cli=("$cli_bin" --config "$work/conf/ase.conf" -u admin -p admin)
    client 198.51.100.40 GET /shop/items -H "X-API-Key: stolen-key" -- "allowed"
    echo "  \$ ase-cli add_blacklist api_key X-API-Key stolen-key"
    "${cli[@]}" add_blacklist api_key X-API-Key stolen-key | sed 's/^/    /'
    sleep 0.3
    client 198.51.100.41 GET /shop/items -H "X-API-Key: stolen-key" -- "blocked: API key on the deny list"
    echo "  \$ ase-cli view_blacklist all"
    "${cli[@]}" view_blacklist all | sed 's/^/    /'
else
    echo "  (skipped: $cli_bin not built yet)"
fi

step "7. An IP from the ABS attack list (reference ABS server):"
if [ -n "$abs_addr" ] && [ -x "$cli_bin" ]; then
    code=000
    for _ in $(seq 30); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Forwarded-For: $abs_ip" "$base/shop/items")
        [ "$code" = 403 ] && break
        sleep 0.2
    done
    client $abs_ip GET /shop/items -- "blocked: ABS attack list"
else
    echo "  (skipped: ase-abs-ref / ase-cli not built yet)"
fi

step "8. Counters from ase_status (all workers, non-zero lines):"
sleep 1.1
curl -s "$base/ase_status" | grep -v '^#' | grep -v ' 0$' | sed 's/^/  /'

step "Access log (\$ase_verdict last): $work/logs/access.log"
tail -n 4 "$work/logs/access.log" | sed 's/^/  /'
if grep -E '\[(alert|emerg|crit)\]' "$work/logs/error.log"; then
    echo "demo: errors in $work/logs/error.log" >&2
    exit 1
fi
