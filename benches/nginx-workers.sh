#!/usr/bin/env bash
# One copy of the lists per host: nginx with a 1.12M-entry ABS attack list at
# 1, 4 and 8 workers, against bare nginx with as many workers.
#
# The list (1,000,000 IPv4 addresses 10.x.y.z, 100,000 OAuth tokens of 40
# bytes, 20,000 JSESSIONID cookies; ~20 MB of JSON) is served by
# target/release/ase-abs-ref to nginx with `ase on`, a copy of examples/demo
# (abs.conf pointed at that server, ase.conf's default attack_list_memory of
# 128MB), ABS polled every 10 s and, unless BENCH_TRAFFIC=1, traffic
# reporting to ABS off (enable_abs=false: its cost is the shipper's, not the
# lists'). For each worker count (BENCH_WORKERS, default "1 4 8"):
#   1. bare nginx (no module) and nginx with ase start side by side, with a
#      fresh state_dir; ABS serves an empty list ({"ips": []});
#   2. once the host-role worker has synced that list and every worker maps
#      a snapshot, the PSS of nginx with ase and of bare nginx are read;
#   3. the big list is put in place (rename) and the clock starts: it stops
#      when the token listed last answers 403 on new connections from every
#      worker pid (X-Worker: $pid, reuseport spreads the connections) and
#      ase_status shows ase_abs_entries 1120000, ase_abs_dropped_items 0 and
#      ase_snapshot_log_position > 0;
#   4. PSS again (workers and master, /proc/PID/smaps_rollup), threads per
#      worker, ase_overlay_entries, the size of state_dir/lists.snap;
#   5. wrk (1 thread, 32 keep-alive connections, BENCH_SECONDS per run,
#      default 5; a 6-byte static file; wrk's address is on no list) against
#      bare and ase, interleaved for BENCH_ROUNDS rounds (default 3); the
#      median requests/s and the median of the per-round ratio to bare.
# With one worker, nginx's worker runs on CPU 0 and wrk on CPU 1 (as
# benches/nginx.sh); with more, nothing is pinned.
#
# "List memory" is the PSS (workers + master) of nginx with ase holding the
# list minus the same nginx before the list came (an empty ABS list, the
# snapshot of the empty lists mapped): what the list costs, apart from the
# module's fixed cost per worker (its code, the engine, the allocator's
# arenas), which would grow with the worker count whatever the list. The PSS
# of ase minus bare is printed as well ("ase - bare").
#
# Goals printed beside the figures: >= 97 % of bare's requests/s with 1
# worker; list memory with 8 workers <= 1.25 x that with 1 worker.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
module=$target/nginx/ngx_http_ase_module.so
nginx=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
abs_bin=$target/release/ase-abs-ref
seconds=${BENCH_SECONDS:-5}
rounds=${BENCH_ROUNDS:-3}
read -ra worker_counts <<<"${BENCH_WORKERS:-1 4 8}"
n_ips=1000000
n_tokens=100000
n_cookies=20000
n_total=$((n_ips + n_tokens + n_cookies))
work=$target/bench-nginx-workers

command -v wrk >/dev/null || { echo "bench: wrk is not installed" >&2; exit 1; }

# Always from the current source (no-ops when nothing changed).
(cd "$root" && cargo build --release --quiet --lib --bin ase-abs-ref)
"$root/scripts/nginx-module.sh" build >/dev/null
# nginx-module.sh builds under $root/target; with CARGO_TARGET_DIR elsewhere
# the module is taken from there.
[ -f "$module" ] || module=$root/target/nginx/ngx_http_ase_module.so

rm -rf "$work"
mkdir -p "$work/html" "$work/traffic"
echo "hello" >"$work/html/index.html"

# --- the attack lists ---------------------------------------------------------
# The last token is the last entry of the list (sections come in the order
# ips, cookies, tokens): if anything were dropped for the memory budget, it
# would be this one.
last_token=$(python3 - "$work" "$n_ips" "$n_tokens" "$n_cookies" <<'EOF'
import json, sys
w, n_ips, n_tok, n_ck = sys.argv[1], *map(int, sys.argv[2:])
ips = ["10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255) for i in range(n_ips)]
# 40 bytes: "bench-tok-" and 30 hex digits
toks = ["bench-tok-%030x" % (i * 0x9E3779B97F4A7C15 % (1 << 120)) for i in range(n_tok)]
cks = ["bench-ck-%023x" % (i * 0xC2B2AE3D27D4EB4F % (1 << 92)) for i in range(n_ck)]
with open(w + "/big.json", "w") as f:
    json.dump({"ips": ips, "cookies": {"JSESSIONID": cks}, "oauth_tokens": toks}, f)
with open(w + "/empty.json", "w") as f:
    json.dump({"ips": []}, f)
print(toks[-1])
EOF
)
list_bytes=$(stat -c %s "$work/big.json")
serve() { # serve FILE: what ABS answers from now on (it re-reads per request)
    cp "$1" "$work/attacklist.json.tmp"
    mv -f "$work/attacklist.json.tmp" "$work/attacklist.json"
}
serve "$work/empty.json"

"$abs_bin" --attacklist "$work/attacklist.json" --listen 127.0.0.1:0 \
    --access-key demo_access --secret-key demo_secret \
    --traffic-dir "$work/traffic" >"$work/abs.out" 2>"$work/abs.err" &
abs_pid=$!
for _ in $(seq 100); do
    grep -q "listening on" "$work/abs.out" 2>/dev/null && break
    sleep 0.05
done
abs_addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/abs.out" | head -1)
[ -n "$abs_addr" ] || { echo "bench: ase-abs-ref did not start" >&2; exit 1; }

user=""
[ "$(id -u)" -eq 0 ] && user="user root;"

started=()
cleanup() {
    for d in "${started[@]}"; do
        [ -f "$d/nginx.pid" ] && kill -QUIT "$(cat "$d/nginx.pid")" 2>/dev/null || true
    done
    kill "$abs_pid" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_nginx DIR PORT WORKERS with|without: nginx in DIR, ase on or no module.
start_nginx() {
    local d=$1 port=$2 n=$3 kind=$4 load="" http="" loc="" affinity=""
    mkdir -p "$d/logs" "$d/tmp"
    if [ "$kind" = with ]; then
        load="load_module $module;"
        http="ase_config $d/conf/ase.conf;"
        loc="ase on;"
    fi
    if [ "$n" -eq 1 ] && [ "$(nproc)" -ge 2 ]; then
        affinity="worker_cpu_affinity 01;"
    fi
    cat >"$d/nginx.conf" <<EOF
$load
$user
worker_processes $n;
$affinity
error_log $d/logs/error.log warn;
pid $d/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    keepalive_requests 1000000;
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
    $http
    server {
        listen 127.0.0.1:$port reuseport;
        root $work/html;
        add_header X-Worker \$pid always;
        location / {
            $loc
            try_files /index.html =404;
        }
        location = /ase_status {
            $( [ "$kind" = with ] && echo "ase off; ase_status;" || echo "return 404;" )
        }
    }
}
EOF
    "$nginx" -p "$d/" -c "$d/nginx.conf"
    started+=("$d")
}

workers_of() { pgrep -P "$(cat "$1/nginx.pid")" | sort -n; }
# pss_kb PID [FIELD]: Pss (or Pss_Anon, Pss_File) of a process, kB
pss_kb() { awk -v f="${2:-Pss}:" '$1 == f {print $2}' "/proc/$1/smaps_rollup"; }
# pss_total DIR [FIELD]: of the master and all its workers, kB
pss_total() {
    local d=$1 t m
    m=$(cat "$d/nginx.pid")
    t=$(pss_kb "$m" "${2:-Pss}")
    for w in $(workers_of "$d"); do t=$((t + $(pss_kb "$w" "${2:-Pss}"))); done
    echo "$t"
}
metric() { # metric PORT NAME: the value, -1 when not shown
    curl -s "http://127.0.0.1:$1/ase_status" \
        | awk -v n="$2" '$1 == n {v = $2} END {print (v == "" ? -1 : v)}'
}
# wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds
wait_for() {
    local limit=$1 what=$2 t0=$SECONDS
    shift 2
    until "$@"; do
        if [ $((SECONDS - t0)) -ge "$limit" ]; then
            echo "bench: $what: not within $limit s" >&2
            return 1
        fi
        sleep 0.1
    done
}
answers_200() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/shop/items")" = 200 ]; }
snapshot_in_use() {
    local p=$1
    [ "$(metric "$p" ase_host_role)" = 1 ] \
        && [ "$(metric "$p" ase_snapshot_log_position)" -gt 0 ] \
        && [ "$(metric "$p" ase_abs_syncs_total)" -ge 1 ]
}
list_in_status() {
    local p=$1
    [ "$(metric "$p" ase_abs_entries)" = "$n_total" ] \
        && [ "$(metric "$p" ase_abs_dropped_items)" = 0 ] \
        && [ "$(metric "$p" ase_snapshot_log_position)" -gt 0 ]
}
# every_worker_blocks PORT N: new connections until N distinct worker pids
# have answered 403 to the last token; false at the first other answer (not
# in force there yet)
every_worker_blocks() {
    local p=$1 n=$2 code pid
    declare -A seen=()
    for _ in $(seq $((n * 40))); do
        read -r code pid < <(curl -s -o /dev/null -D - \
            -H "Authorization: Bearer $last_token" -H "X-Forwarded-For: 192.0.2.1" \
            "http://127.0.0.1:$p/shop/items" \
            | awk 'NR == 1 {c = $2} tolower($1) == "x-worker:" {w = $2} END {print c, w}' \
            | tr -d '\r')
        [ "$code" = 403 ] || return 1
        seen[$pid]=1
        [ "${#seen[@]}" -ge "$n" ] && return 0
    done
    return 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

wrk_cpu=()
declare -A R
for n in "${worker_counts[@]}"; do
    serve "$work/empty.json"
    bare=$work/w$n-bare
    ase=$work/w$n-ase
    mkdir -p "$bare" "$ase"
    cp -r "$root/examples/demo" "$ase/conf"
    rm -rf "$ase/conf/state"
    sed -i "s/^abs_endpoint=.*/abs_endpoint=$abs_addr/" "$ase/conf/abs.conf"
    # The demo polls ABS every second; production every 10 minutes. 10 s
    # keeps the wait for the list short without re-parsing 19 MB a second.
    sed -i "s/^abs_attack_request_interval=.*/abs_attack_request_interval=10s/" \
        "$ase/conf/ase.conf"
    # Traffic reporting to ABS (a record of every request, posted by the
    # host-role worker's shipper) is its own cost: BENCH_TRAFFIC=1 keeps it.
    if [ "${BENCH_TRAFFIC:-0}" != 1 ]; then
        sed -i "s/^enable_abs=.*/enable_abs=false/" "$ase/conf/ase.conf"
    fi
    grep -q '^attack_list_memory' "$ase/conf/ase.conf" \
        && { echo "bench: the demo's ase.conf sets attack_list_memory" >&2; exit 1; }
    pb=$(free_port)
    pa=$(free_port)
    start_nginx "$bare" "$pb" "$n" without
    start_nginx "$ase" "$pa" "$n" with
    wait_for 20 "bare nginx answers" answers_200 "$pb"
    wait_for 20 "nginx with ase answers" answers_200 "$pa"
    wait_for 60 "empty list synced, snapshot in use" snapshot_in_use "$pa"
    sleep 1
    pss_bare=$(pss_total "$bare")
    pss_empty=$(pss_total "$ase")
    file_empty=$(pss_total "$ase" Pss_File)

    serve "$work/big.json"
    t0=$(date +%s.%N)
    wait_for 300 "the last token blocks on every worker" every_worker_blocks "$pa" "$n"
    t1=$(date +%s.%N)
    wait_for 30 "ase_status shows the whole list" list_in_status "$pa"
    sleep 1
    pss_list=$(pss_total "$ase")
    file_list=$(pss_total "$ase" Pss_File)
    # threads: of the workers without the host role (each the same), and of
    # the one with it
    threads=$(for w in $(workers_of "$ase"); do
        awk '/^Threads:/ {print $2}' "/proc/$w/status"; done | sort -n \
        | awk '{a[NR] = $1} END {
            if (NR == 1) print a[1]; else printf "%s, host %s\n", a[1], a[NR] }')
    overlay=$(metric "$pa" ase_overlay_entries)
    snap=$(stat -c %s "$ase/conf/state/lists.snap")
    # the worker holding the host role: the one with threads
    host_pss=0 host_anon=0
    for w in $(workers_of "$ase"); do
        t=$(awk '/^Threads:/ {print $2}' "/proc/$w/status")
        if [ "$t" -gt 1 ]; then
            host_pss=$(pss_kb "$w")
            host_anon=$(pss_kb "$w" Pss_Anon)
        fi
    done
    other_pss=$(( (pss_list - host_pss - $(pss_kb "$(cat "$ase/nginx.pid")")) ))

    wrk_cpu=()
    if [ "$n" -eq 1 ] && [ "$(nproc)" -ge 2 ]; then wrk_cpu=(taskset -c 1); fi
    runs_b="" runs_a="" ratios=""
    for r in $(seq "$rounds"); do
        for kind in bare ase; do
            p=$pb
            [ "$kind" = ase ] && p=$pa
            out=$("${wrk_cpu[@]}" wrk -t1 -c32 -d"${seconds}s" "http://127.0.0.1:$p/shop/items")
            rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
            non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
            [ -z "$non2xx" ] || { echo "bench: $kind answered $non2xx non-2xx" >&2; exit 1; }
            if [ "$kind" = bare ]; then
                runs_b="$runs_b $rps"
                bare_r=$rps
            else
                runs_a="$runs_a $rps"
                ratios="$ratios $(echo "$rps $bare_r" | awk '{print 100*$1/$2}')"
            fi
            printf '%d workers, round %d  %-4s %10.0f req/s\n' "$n" "$r" "$kind" "$rps" >&2
        done
    done
    R[$n]="$(echo "$t0 $t1" | awk '{printf "%.1f", $2-$1}')|$pss_bare|$pss_empty|$pss_list|$threads|$overlay|$snap|$(echo "$runs_b" | median)|$(echo "$runs_a" | median)|$(echo "$ratios" | median)|$host_pss|$other_pss|$host_anon|$((file_list - file_empty))"
    for d in "$bare" "$ase"; do
        kill -QUIT "$(cat "$d/nginx.pid")"
    done
    for d in "$bare" "$ase"; do
        for _ in $(seq 100); do [ -f "$d/nginx.pid" ] || break; sleep 0.1; done
    done
    started=()
done

mb() { echo "$1" | awk '{printf "%.1f", $1/1024}'; }
echo
echo "nginx $("$nginx" -v 2>&1 | sed 's/.*\///'); ABS list $n_total entries ($n_ips IPv4," \
    "$n_tokens tokens, $n_cookies cookies; $((list_bytes / 1024 / 1024)) MB of JSON);" \
    "attack_list_memory default (128MB); wrk -t1 -c32 -d${seconds}s, $rounds interleaved" \
    "rounds, medians; $(nproc) CPUs; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-28s' "workers"
for n in "${worker_counts[@]}"; do printf '%14s' "$n"; done
printf '  %s\n' "goal"
row() { # row LABEL FIELD FORMAT-FN [GOAL]
    local label=$1 f=$2 fn=$3 goal=${4:-}
    printf '%-28s' "$label"
    for n in "${worker_counts[@]}"; do
        v=$(echo "${R[$n]}" | cut -d'|' -f"$f")
        printf '%14s' "$($fn "$v" "$n")"
    done
    printf '  %s\n' "$goal"
}
id_() { echo "$1"; }
mbf() { mb "$1"; }
mbf_b() { echo "$1" | awk '{printf "%.1f", $1/1048576}'; }
rps_() { printf '%.0f' "$1"; }
pct() { printf '%.1f %%' "$1"; }
f() { echo "${R[$2]}" | cut -d'|' -f"$1"; }
list_mem() { echo "$(f 4 "$2") $(f 3 "$2")" | awk '{printf "%.1f", ($1-$2)/1024}'; }
ase_minus_bare() { echo "$(f 4 "$2") $(f 2 "$2")" | awk '{printf "%.1f", ($1-$2)/1024}'; }
first_n=${worker_counts[0]}
ratio_to_first() {
    echo "$(f 4 "$2") $(f 3 "$2") $(f 4 "$first_n") $(f 3 "$first_n")" \
        | awk '{printf "%.2f x", ($1-$2)/($3-$4)}'
}
row "list to every worker, s" 1 id_
row "PSS bare, MB" 2 mbf
row "PSS ase, empty list, MB" 3 mbf
row "PSS ase, with list, MB" 4 mbf
row "  host-role worker, MB" 11 mbf
row "  of which heap (Pss_Anon)" 13 mbf
row "  other workers, MB" 12 mbf
row "  file pages (Pss_File) +, MB" 14 mbf
row "list memory, MB (*)" 4 list_mem
row "list memory vs ${first_n} worker(s)" 4 ratio_to_first "8 workers <= 1.25 x 1 worker"
row "ase - bare (with list), MB" 4 ase_minus_bare
row "threads per worker" 5 id_
row "ase_overlay_entries" 6 id_
row "lists.snap, MB" 7 mbf_b
row "bare, req/s" 8 rps_
row "ase, req/s" 9 rps_
row "ase vs bare" 10 pct ">= 97 % with 1 worker"
echo "host-role worker: the one with threads (it fetched, parsed and stored the list and built the snapshot)"
echo "Pss_File +: file-backed PSS gained with the list (lists.snap pages mapped), all processes"
echo "(*) list memory: PSS of nginx with ase (workers + master) with the list minus before it came"
