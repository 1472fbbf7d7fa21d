#!/usr/bin/env bash
# nginx throughput with ase against nginx's own and ModSecurity's IP blocking.
#
# wrk (1 thread, 32 connections, BENCH_SECONDS per run, default 5) against one
# nginx worker serving a small static file on 127.0.0.1, in these setups:
#   bare       no blocking at all
#   threads    bare with two idle threads in the worker (an unused
#              `thread_pool`): what any module with background threads costs,
#              as ase's watcher and writer do (see docs/BENCHMARKS.md)
#   ase        `ase on`, the demo APIs, 1M manual deny entries (imported with
#              `ase-cli import_blacklist`)
#   deny10k    10k `deny ADDR;` rules of ngx_http_access_module
#   geo1m      `geo` with 1M addresses and `if ($blocked) { return 403; }`
#   modsec100k ModSecurity-nginx, `@ipMatchFromFile` with 100k addresses
#              (Debian's libnginx-mod-http-modsecurity; skipped if absent)
# Runs are interleaved (BENCH_ROUNDS rounds, default 3, of every setup); the
# median requests/s of each setup is printed with the median of its per-round
# ratio to bare, and the worker's CPU time per request. wrk's address is on no list (each setup is first shown to
# answer 403 to a listed one): this measures the cost of the check.
# nginx's worker runs on CPU 0 and wrk on CPU 1 when there are two CPUs.
# BENCH_SETUPS (e.g. "bare ase") runs only those setups; bare always runs.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
module=$root/target/nginx/ngx_http_ase_module.so
modsec=${MODSEC_MODULE:-/usr/lib/nginx/modules/ngx_http_modsecurity_module.so}
nginx=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
cli_bin=$root/target/release/ase-cli
seconds=${BENCH_SECONDS:-5}
rounds=${BENCH_ROUNDS:-3}
work=$root/target/bench-nginx

command -v wrk >/dev/null || { echo "bench: wrk is not installed" >&2; exit 1; }

# The setups to run, in this order, each once; bare always.
read -ra wanted <<<"${BENCH_SETUPS:-threads ase deny10k geo1m modsec100k}"
setups=(bare)
for s in threads ase deny10k geo1m modsec100k; do
    [[ " ${wanted[*]} " == *" $s "* ]] || continue
    if [ "$s" = modsec100k ] && [ ! -f "$modsec" ]; then
        echo "bench: modsec100k skipped: no module at $modsec" >&2
        continue
    fi
    setups+=("$s")
done
for s in "${wanted[@]}"; do
    case $s in
        bare | threads | ase | deny10k | geo1m | modsec100k) ;;
        *) echo "bench: unknown setup $s (bare threads ase deny10k geo1m modsec100k)" >&2; exit 2 ;;
    esac
done
has() { [[ " ${setups[*]} " == *" $1 "* ]]; }

# Always from the current source: a module left from an older build would be
# measured otherwise (the build steps are no-ops when nothing changed).
if has ase; then
    (cd "$root" && cargo build --release --quiet --lib --bin ase-cli)
    "$root/scripts/nginx-module.sh" build >/dev/null
fi

rm -rf "$work"
mkdir -p "$work/html"
echo "hello" >"$work/html/index.html"

# --- address lists: 10.x.y.z, never 127.0.0.1 -------------------------------
python3 - "$work" <<'EOF'
import sys
w = sys.argv[1]
def ips(n):
    for i in range(n):
        yield "10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255)
with open(w + "/deny10k.conf", "w") as f:
    f.writelines("deny %s;\n" % a for a in ips(10_000))
with open(w + "/geo1m.conf", "w") as f:
    f.writelines("%s 1;\n" % a for a in ips(1_000_000))
with open(w + "/modsec100k.txt", "w") as f:
    f.writelines("%s\n" % a for a in ips(100_000))
with open(w + "/ase1m.txt", "w") as f:
    f.writelines("ip %s\n" % a for a in ips(1_000_000))
EOF

# --- ase: the demo APIs, no ABS, 1M manual deny entries -----------------------
if has ase; then
    cp -r "$root/examples/demo" "$work/ase"
    rm -rf "$work/ase/state" "$work/ase/abs.conf"
    sed -i 's/^enable_abs=.*/enable_abs=false/; s/^enable_abs_attack=.*/enable_abs_attack=false/' \
        "$work/ase/ase.conf"
    "$cli_bin" --config "$work/ase/ase.conf" -u admin -p admin \
        import_blacklist "$work/ase1m.txt" >/dev/null
fi

user=""
[ "$(id -u)" -eq 0 ] && user="user root;"
affinity=""
wrk_cpu=()
if [ "$(nproc)" -ge 2 ]; then
    affinity="worker_cpu_affinity 01;"
    wrk_cpu=(taskset -c 1)
fi

declare -A port
started=()
cleanup() {
    for s in "${started[@]}"; do
        [ -f "$work/$s/nginx.pid" ] && kill -QUIT "$(cat "$work/$s/nginx.pid")" 2>/dev/null || true
    done
}
trap cleanup EXIT INT TERM

for s in "${setups[@]}"; do
    d=$work/$s
    mkdir -p "$d/logs" "$d/tmp"
    port[$s]=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    load="" http="" loc=""
    main=""
    case $s in
        threads)
            main="thread_pool ase_bench_idle threads=2;" ;;
        ase)
            load="load_module $module;"
            http="ase_config $work/ase/ase.conf;"
            loc="ase on;" ;;
        deny10k)
            loc="include $work/deny10k.conf; allow all;" ;;
        geo1m)
            http="geo \$blocked { default 0; include $work/geo1m.conf; }"
            loc="if (\$blocked) { return 403; }" ;;
        modsec100k)
            load="load_module $modsec;"
            cat >"$d/modsec.conf" <<EOF
SecRuleEngine On
SecRequestBodyAccess Off
SecResponseBodyAccess Off
SecAuditEngine Off
SecRule REMOTE_ADDR "@ipMatchFromFile $work/modsec100k.txt" "id:1000,phase:1,deny,status:403,nolog"
EOF
            http="modsecurity on; modsecurity_rules_file $d/modsec.conf;" ;;
    esac
    cat >"$d/nginx.conf" <<EOF
$load
$user
worker_processes 1;
$main
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
        listen 127.0.0.1:${port[$s]};
        root $work/html;
        location / {
            $loc
            try_files /index.html =404;
        }
    }
}
EOF
    "$nginx" -p "$d/" -c "$d/nginx.conf"
    started+=("$s")
done

# every setup answers 200 before measuring
for s in "${setups[@]}"; do
    for _ in $(seq 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${port[$s]}/shop/items" || true)
        [ "$code" = 200 ] && break
        sleep 0.2
    done
    [ "$code" = 200 ] || { echo "bench: $s answers $code" >&2; exit 1; }
    # ...and blocks a listed address (wrk sends no X-Forwarded-For)
    case $s in bare | threads) continue ;; esac
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Forwarded-For: 10.0.1.2" \
        "http://127.0.0.1:${port[$s]}/shop/items")
    [ "$code" = 403 ] || { echo "bench: $s lets a listed address through ($code)" >&2; exit 1; }
done

# Each round measures every setup once; a setup's ratio to bare is taken
# within its round (so load drifting between rounds cancels out), and the
# median over the rounds is printed.
# On a busy machine requests/s drifts with the load of other processes;
# the worker's CPU time per request (utime + stime from /proc) does much less,
# so it is printed too.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
declare -A runs ratios cpus
for r in $(seq "$rounds"); do
    for s in "${setups[@]}"; do
        w=$(pgrep -P "$(cat "$work/$s/nginx.pid")" | head -1)
        t0=$(cpu_ticks "$w")
        out=$("${wrk_cpu[@]}" wrk -t1 -c32 -d"${seconds}s" \
            "http://127.0.0.1:${port[$s]}/shop/items")
        t1=$(cpu_ticks "$w")
        rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
        n=$(echo "$out" | awk '/requests in/ {print $1}')
        us=$(echo "$t0 $t1 $tck $n" | awk '{printf "%.2f", ($2-$1)/$3*1e6/$4}')
        runs[$s]="${runs[$s]:-} $rps"
        cpus[$s]="${cpus[$s]:-} $us"
        [ "$s" = bare ] && bare_r=$rps
        ratios[$s]="${ratios[$s]:-} $(echo "$rps $bare_r" | awk '{print 100*$1/$2}')"
        printf 'round %d  %-11s %12.0f req/s %8s us CPU/request\n' "$r" "$s" "$rps" "$us" >&2
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "nginx $("$nginx" -v 2>&1 | sed 's/.*\///'), 1 worker, wrk -t1 -c32 -d${seconds}s," \
    "$rounds interleaved rounds, medians; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-11s %10s %8s %12s %8s  %s\n' setup "req/s" "vs bare" "us CPU/req" "vs bare" "list"
bare_cpu=$(echo "${cpus[bare]}" | median)
for s in "${setups[@]}"; do
    m=$(echo "${runs[$s]}" | median)
    c=$(echo "${cpus[$s]}" | median)
    case $s in
        bare) what="-" ;;
        threads) what="2 idle threads (thread_pool)" ;;
        ase) what="1000000 deny entries (ase-cli import_blacklist)" ;;
        deny10k) what="10000 deny rules" ;;
        geo1m) what="1000000 geo entries" ;;
        modsec100k) what="100000 addresses, @ipMatchFromFile" ;;
    esac
    printf '%-11s %10.0f %7.1f%% %12.2f %7.1f%%  %s\n' "$s" "$m" \
        "$(echo "${ratios[$s]}" | median)" "$c" \
        "$(echo "$c $bare_cpu" | awk '{print 100*$1/$2}')" "$what"
done
