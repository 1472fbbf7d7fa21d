#!/usr/bin/env bash
# The C and C++ examples and header tests: examples/*.c, examples/*.cpp,
# bindings/cpp/ase.hpp, tests/c/. examples/server.c (a multi-threaded HTTP
# server) is run in the background and sent requests over loopback.
#
#   scripts/examples.sh build   compile them into target/examples/
#   scripts/examples.sh test    build, run them on the scenarios below and diff
#                               their stdout, stderr and exit status against the
#                               expected text; under valgrind when installed
#                               (VALGRIND=0 turns it off)
#
# The header tests in tests/c/ are compiled by `test` only, as test cases.
# Needs target/release/libase.{a,so} (`cargo build --release --lib`; `make
# examples` / `make test-examples` do it). The C programs link libase.a, as the
# README advises; check_cpp and include_twice_cpp link libase.so through an
# rpath relative to the binary, so both artifacts are exercised.
#
# Each case runs in a fresh directory @DIR@ holding a copy of
# examples/config/ase.conf whose api_dir is examples/config/api and whose
# state_dir is @DIR@/state, so no case sees another's lists. "@DIR@" in the
# arguments is replaced by that directory, and the directory's path is
# written back as "@DIR@" in the output before it is compared.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

lib=target/release
out=target/examples
CC=${CC:-gcc}
CXX=${CXX:-g++}
cflags=(-std=c11 -Wall -Wextra -Wpedantic -Werror -O2 -g)
cxxflags=(-std=c++17 -Wall -Wextra -Wpedantic -Werror -O2 -g)
# What libase.a needs from the system (`cargo rustc --release --lib --crate-type
# staticlib -- --print native-static-libs` lists it).
static_libs=(-lpthread -ldl -lm)
# The second pass: memcheck misses a view of a dead stack temporary, ASan does not.
sanitize=(-O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1
shared=()
cflags_now=()
cxxflags_now=()
out=

# build [asan]: the examples into target/examples/ (release flags), or with
# AddressSanitizer and UBSan into target/examples/asan/. Sets $out.
build() {
    local -a cf=("${cflags[@]}") cxf=("${cxxflags[@]}")
    # '$ORIGIN' is for the dynamic linker, not the shell.
    # shellcheck disable=SC2016
    local rpath='$ORIGIN/../release'
    out=target/examples
    if [ "${1:-}" = asan ]; then
        out=target/examples/asan
        # shellcheck disable=SC2016
        rpath='$ORIGIN/../../release'
        cf+=("${sanitize[@]}")
        cxf+=("${sanitize[@]}")
    fi
    shared=(-L"$lib" -Wl,-rpath,"$rpath" -lase)
    for f in "$lib/libase.a" "$lib/libase.so"; do
        if [ ! -f "$f" ]; then
            echo "examples: $f is missing: run 'cargo build --release --lib' first" >&2
            exit 1
        fi
    done
    mkdir -p "$out"
    "$CC" "${cf[@]}" -Iinclude -Iexamples examples/check.c -o "$out/check" \
        "$lib/libase.a" "${static_libs[@]}"
    "$CC" "${cf[@]}" -Iinclude -Iexamples examples/lists.c -o "$out/lists" \
        "$lib/libase.a" "${static_libs[@]}"
    "$CXX" "${cxf[@]}" -Iinclude -Ibindings/cpp examples/check.cpp -o "$out/check_cpp" \
        "${shared[@]}"
    "$CC" "${cf[@]}" -Iinclude examples/server.c -o "$out/server" \
        "$lib/libase.a" "${static_libs[@]}"
    echo "examples: built check, lists, check_cpp and server in $out/"
    cflags_now=("${cf[@]}")
    cxxflags_now=("${cxf[@]}")
}

passed=0
failed=0
tmp=

# compiles NAME COMMAND...: a test case that passes when COMMAND (a compiler
# run) succeeds without a diagnostic.
compiles() {
    local name=$1
    shift
    mkdir -p "$tmp/$name"
    if "$@" >"$tmp/$name.log" 2>&1 && [ ! -s "$tmp/$name.log" ]; then
        echo "ok   $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name: does not compile cleanly:"
        cat "$tmp/$name.log"
        failed=$((failed + 1))
    fi
}

# expect NAME STATUS STDERR PROGRAM [ARG]... <<EOF
# expected stdout
# EOF
# Runs target/examples/PROGRAM with ARGs in a fresh case directory and checks
# the exit status, the whole of stderr (one string, "" for none) and stdout.
# One case's end: valgrind's findings fail it too; counted as passed or failed.
tally() {
    local name=$1 dir=$2 ok=$3
    if [ -s "$dir/valgrind.log" ]; then
        echo "FAIL $name: valgrind:"
        cat "$dir/valgrind.log"
        ok=0
    fi
    if [ "$ok" = 1 ]; then
        echo "ok   $name"
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
}

expect() {
    local name=$1 want_status=$2 want_err=$3 prog=$4
    shift 4
    local dir="$tmp/$name" status=0 ok=1 arg
    local -a args=() run=()
    mkdir -p "$dir"
    if [ ! -x "$out/$prog" ]; then
        cat >/dev/null
        echo "FAIL $name: $out/$prog was not built"
        failed=$((failed + 1))
        return
    fi
    sed -e "s|^api_dir=.*|api_dir=$root/examples/config/api|" \
        -e "s|^state_dir=.*|state_dir=$dir/state|" examples/config/ase.conf >"$dir/ase.conf"
    for arg in "$@"; do
        args+=("${arg//@DIR@/$dir}")
    done
    cat >"$dir/want.out"
    if [ -n "$want_err" ]; then
        printf '%s\n' "$want_err" >"$dir/want.err"
    else
        : >"$dir/want.err"
    fi
    if [ -n "$valgrind" ]; then
        # -q: the log holds only errors, so it must be empty, whatever the exit
        # status (error-path cases exit 1 on purpose). Leaks count when they
        # are definite: glibc keeps the thread-local block (DTV) of a joined
        # thread's cached stack through an interior pointer, which valgrind
        # reports as "possibly lost" depending on thread timing.
        run=(valgrind -q --error-exitcode=1 --leak-check=full
            --show-leak-kinds=definite --errors-for-leak-kinds=definite
            --log-file="$dir/valgrind.log")
    fi
    "${run[@]}" "$out/$prog" "${args[@]}" >"$dir/got.out" 2>"$dir/got.err" || status=$?
    sed -i "s|$dir|@DIR@|g" "$dir/got.out" "$dir/got.err"
    if [ "$status" != "$want_status" ]; then
        echo "FAIL $name: exit status $status, expected $want_status"
        ok=0
    fi
    if ! diff -u --label "expected stdout" --label "$prog stdout" "$dir/want.out" "$dir/got.out"; then
        echo "FAIL $name: stdout differs"
        ok=0
    fi
    if ! diff -u --label "expected stderr" --label "$prog stderr" "$dir/want.err" "$dir/got.err"; then
        echo "FAIL $name: stderr differs"
        ok=0
    fi
    tally "$name" "$dir" "$ok"
}

# http PORT METHOD PATH [HEADER]: one request to the server example; prints
# "METHOD PATH -> STATUS REASON: FIRST BODY LINE".
http() {
    local port=$1 method=$2 path=$3 header=${4:-} line status body
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf '%s %s HTTP/1.1\r\nHost: shop.example.com\r\n%s\r\n' "$method" "$path" \
        "${header:+$header$'\r\n'}" >&3
    IFS= read -r status <&3 || true
    status=${status%$'\r'}
    body=""
    while IFS= read -r line <&3; do
        line=${line%$'\r'}
        [ -z "$line" ] && break
    done
    IFS= read -r body <&3 || true
    exec 3<&-
    echo "$method $path -> ${status#HTTP/1.1 }: $body"
}

# serves NAME: the server example with 4 threads on a free port. A deny
# entry is made first by the lists example in the same state store (as
# ase-cli would make it); requests come from 40 clients at once too; then
# SIGTERM, and the server must stop cleanly (status 0, its count printed).
serves() {
    local name=$1 dir="$tmp/$1" pid port="" i status=0 ok=1
    local -a run=() clients=()
    mkdir -p "$dir"
    sed -e "s|^api_dir=.*|api_dir=$root/examples/config/api|" \
        -e "s|^state_dir=.*|state_dir=$dir/state|" examples/config/ase.conf >"$dir/ase.conf"
    "$out/lists" "$dir/ase.conf" deny-add cookie JSESSIONID stolen-session >/dev/null
    if [ -n "$valgrind" ]; then
        run=(valgrind -q --error-exitcode=1 --leak-check=full
            --show-leak-kinds=definite --errors-for-leak-kinds=definite
            --log-file="$dir/valgrind.log")
    fi
    "${run[@]}" "$out/server" "$dir/ase.conf" 0 4 >"$dir/server.out" 2>"$dir/server.err" &
    pid=$!
    for i in $(seq 1 600); do
        port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$dir/server.out")
        [ -n "$port" ] && break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        kill "$pid" 2>/dev/null || true
        echo "FAIL $name: the server did not start: $(cat "$dir/server.err")"
        failed=$((failed + 1))
        return
    fi
    {
        http "$port" GET /shopapi/items
        http "$port" GET /shopapi/cart "Cookie: JSESSIONID=stolen-session"
        http "$port" GET /shopapi/admin
        http "$port" DELETE /shopapi/items
        http "$port" GET /elsewhere
    } >"$dir/got.out"
    for i in $(seq 1 40); do
        http "$port" GET /shopapi/items >"$dir/many.$i" &
        clients+=($!)
    done
    wait "${clients[@]}" || true
    kill -TERM "$pid"
    wait "$pid" || status=$?
    cat >"$dir/want.out" <<'EOF'
GET /shopapi/items -> 200 OK: hello from the API
GET /shopapi/cart -> 403 Forbidden: Error: Unauthorized
GET /shopapi/admin -> 200 OK: {"status":"ok"}
DELETE /shopapi/items -> 405 Method Not Allowed: 405 Method Not Allowed
GET /elsewhere -> 503 Service Unavailable: Error: Unknown API
EOF
    if ! diff -u --label expected --label server "$dir/want.out" "$dir/got.out"; then
        echo "FAIL $name: answers differ"
        ok=0
    fi
    if [ "$(cat "$dir"/many.* | sort | uniq -c | sed 's/^ *//')" \
        != "40 GET /shopapi/items -> 200 OK: hello from the API" ]; then
        echo "FAIL $name: concurrent clients: $(cat "$dir"/many.* | sort | uniq -c)"
        ok=0
    fi
    if [ "$status" != 0 ] || [ -s "$dir/server.err" ] || [ "$(tail -n 1 "$dir/server.out")" \
        != "stopped after 45 requests (41 allowed, 4 stopped)" ]; then
        echo "FAIL $name: exit status $status, last line: $(tail -n 1 "$dir/server.out")," \
            "stderr: $(cat "$dir/server.err")"
        ok=0
    fi
    tally "$name" "$dir" "$ok"
}

# suite PASS: every case, with the binaries of $out, each named PASS/CASE.
suite() {
    local pass=$1 version
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

    # --- header hygiene (each header included twice) and version macros ---
    rm -f "$out/include_twice_c" "$out/include_twice_cpp"
    compiles "$pass/compile-include-twice-c" "$CC" "${cflags_now[@]}" -Iinclude tests/c/include_twice.c \
        -o "$out/include_twice_c" "$lib/libase.a" "${static_libs[@]}"
    compiles "$pass/compile-include-twice-cpp" "$CXX" "${cxxflags_now[@]}" -Iinclude -Ibindings/cpp \
        tests/c/include_twice.cpp -o "$out/include_twice_cpp" "${shared[@]}"
    expect "$pass/include-twice-c" 0 "" include_twice_c <<EOF
include_twice.c: ase $version
EOF
    expect "$pass/include-twice-cpp" 0 "" include_twice_cpp <<EOF
include_twice.cpp: ase $version; invalid configuration file: config path is empty
EOF

    # --- verdicts: examples/requests.txt, the same output from C and C++ ---
    local verdicts
    verdicts=$(
        cat <<'EOF'
GET https://shop.example.com/shopapi/items?page=2 from 203.0.113.10 -> allow api=shop
deny ip 203.0.113.66: ok
GET https://shop.example.com/shopapi/items from 203.0.113.66 -> block 403 Forbidden (deny_list, ip, manual) api=shop body="Error: Unauthorized"
deny ip 198.51.100.0/24: ok
GET https://shop.example.com/shopapi/items from 198.51.100.77 -> block 403 Forbidden (deny_list, ip, manual) api=shop body="Error: Unauthorized"
deny ip 2001:db8:bad::/48: ok
GET https://shop.example.com/shopapi/items from 2001:db8:bad::1 -> block 403 Forbidden (deny_list, ip, manual) api=shop body="Error: Unauthorized"
GET https://shop.example.com/shopapi/items from 2001:db8:600d::1 -> allow api=shop
deny cookie JSESSIONID stolen-session: ok
GET https://shop.example.com/shopapi/cart from 203.0.113.10 -> block 403 Forbidden (deny_list, cookie, manual) api=shop body="Error: Unauthorized"
GET https://shop.example.com/shopapi/cart from 203.0.113.10 -> allow api=shop
deny token eyJleaked: ok
GET https://shop.example.com/shopapi/orders from 203.0.113.10 -> block 403 Forbidden (deny_list, token, manual) api=shop body="Error: Unauthorized"
deny api_key X-API-KEY key-123: ok
GET https://shop.example.com/shopapi/orders from 203.0.113.10 -> block 403 Forbidden (deny_list, api_key, manual) api=shop body="Error: Unauthorized"
deny username "Mallory Mal": ok
POST https://shop.example.com/shopapi/orders from 203.0.113.10 -> block 403 Forbidden (deny_list, username, manual) api=shop body="Error: Unauthorized"
allow cookie JSESSIONID trusted-session: ok
GET https://shop.example.com/shopapi/items from 203.0.113.66 -> allow (allow_list, cookie) api=shop
GET https://shop.example.com/shopapi/admin from 203.0.113.20 -> respond 200 OK (decoy) api=shop body="{\"status\":\"ok\"}"
DELETE https://shop.example.com/shopapi/items from 203.0.113.21 -> respond 405 Method Not Allowed (method) api=shop body="405 Method Not Allowed"
GET https://www.example.com/index.html from 203.0.113.10 -> block 503 Service Unavailable (unknown_api) body="Error: Unknown API"
GET https://shop.example.com/shopapix from 203.0.113.10 -> block 503 Service Unavailable (unknown_api) body="Error: Unknown API"
GET https://trading.example.com/trading/quotes from 203.0.113.66 -> allow (would block: deny_list, ip, manual) api=trading
deny api_key key qs-key-9: ok
GET https://trading.example.com/trading/quotes?key=qs-key-9 from 203.0.113.10 -> allow (would block: deny_list, api_key, manual) api=trading
blocking trading on: ok
GET https://trading.example.com/trading/quotes from 203.0.113.66 -> block 403 Forbidden (deny_list, ip, manual) api=trading body="Error: Unauthorized"
switch ase_detected_attack on: ok
GET https://shop.example.com/shopapi/admin from 203.0.113.30 -> respond 200 OK (decoy) api=shop body="{\"status\":\"ok\"}"
GET https://shop.example.com/shopapi/items from 203.0.113.30 -> block 403 Forbidden (deny_list, ip, decoy) api=shop body="Error: Unauthorized"
PUT https://shop.example.com/shopapi/items from 203.0.113.31 -> respond 405 Method Not Allowed (method) api=shop body="405 Method Not Allowed"
GET https://shop.example.com/shopapi/items from 203.0.113.99 -> block 403 Forbidden (deny_list, cookie, invalid_method) api=shop body="Error: Unauthorized"
switch firewall off: ok
GET https://shop.example.com/shopapi/items from 203.0.113.66 -> allow (firewall_off)
GET https://www.example.com/index.html from 203.0.113.10 -> allow (firewall_off)
EOF
    )
    expect "$pass/check-requests" 0 "" check @DIR@/ase.conf -f examples/requests.txt <<<"$verdicts"
    expect "$pass/check-cpp-requests" 0 "" check_cpp @DIR@/ase.conf -f examples/requests.txt <<<"$verdicts"

    # Lines as arguments; the first error stops the run with status 1.
    local args_out
    args_out=$(
        cat <<'EOF'
GET http://api.example.com/trading/x from - -> allow api=trading
allow ip 192.0.2.1: ok
deny ip 192.0.2.0/24: ok
GET https://shop.example.com/shopapi/x from 192.0.2.1 -> allow (allow_list, ip) api=shop
GET https://shop.example.com/shopapi/x from 192.0.2.2 -> block 403 Forbidden (deny_list, ip, manual) api=shop body="Error: Unauthorized"
EOF
    )
    local args=(@DIR@/ase.conf 'GET http://api.example.com/trading/x -' '!allow ip 192.0.2.1'
        '!deny ip 192.0.2.0/24' 'GET https://shop.example.com/shopapi/x 192.0.2.1'
        'GET https://shop.example.com/shopapi/x 192.0.2.2' 'GET https://shop.example.com/ 192.0.2.300'
        'GET https://shop.example.com/ 192.0.2.3')
    local bad_ip="check: argument 7: the client address is not an IP address"
    expect "$pass/check-arguments" 1 "$bad_ip" check "${args[@]}" <<<"$args_out"
    expect "$pass/check-cpp-arguments" 1 "$bad_ip" check_cpp "${args[@]}" <<<"$args_out"

    # --- lists: examples/lists.txt ---
    expect "$pass/lists-script" 0 "" lists @DIR@/ase.conf -f examples/lists.txt <<'EOF'
deny-add ip 203.0.113.66: ok
deny-add ip 2001:db8:bad::/48: ok
deny-add cookie JSESSIONID stolen-session: ok
deny-add token eyJleaked: ok
deny-add api_key X-API-KEY key-123: ok
deny-add username "Mallory Mal": ok
deny-add ip 203.0.113.66: ok
allow-add ip 10.0.0.0/8: ok
allow-add cookie JSESSIONID trusted-session: ok
manual ip 203.0.113.66
manual ip 2001:db8:bad::/48
manual cookie JSESSIONID stolen-session
manual token eyJleaked
manual api_key X-API-KEY key-123
manual username "Mallory Mal"
6 entries
0 entries
ip 10.0.0.0/8
cookie JSESSIONID trusted-session
2 entries
deny-remove token eyJleaked: ok
allow-remove ip 10.0.0.0/8: ok
manual ip 203.0.113.66
manual ip 2001:db8:bad::/48
manual cookie JSESSIONID stolen-session
manual api_key X-API-KEY key-123
manual username "Mallory Mal"
5 entries
cookie JSESSIONID trusted-session
1 entry
firewall on
switch firewall off: ok
firewall off
switch ase_detected_attack on: ok
blocking trading on: ok
checked 0
allowed 0
blocked 0
would_block 0
detections 0
deny_entries 5
allow_entries 1
deny-clear manual: ok
allow-clear: ok
0 entries
0 entries
checked 0
allowed 0
blocked 0
would_block 0
detections 0
deny_entries 0
allow_entries 0
EOF
    expect "$pass/lists-one-command" 0 "" lists @DIR@/ase.conf deny-add cookie JSESSIONID abc <<'EOF'
deny-add cookie JSESSIONID abc: ok
EOF
    # --- the C++ wrapper calls every function of ase.h ---
    local fn missing=""
    for fn in $(sed -n 's/^[a-z_ ]*\*\{0,1\}\(ase_[a-z_]*\)(.*/\1/p' include/ase.h | sort -u); do
        case $fn in
        ase_str_from_cstr) ;; # a C convenience; C++ has to_ase()
        *) grep -q "\b$fn(" bindings/cpp/ase.hpp || missing+=" $fn" ;;
        esac
    done
    if [ -z "$missing" ]; then
        echo "ok   $pass/wrapper-covers-the-c-api"
        passed=$((passed + 1))
    else
        echo "FAIL $pass/wrapper-covers-the-c-api: not called in ase.hpp:$missing"
        failed=$((failed + 1))
    fi

    # --- the C++ wrapper beyond check and lists ---
    rm -f "$out/wrapper_cpp"
    compiles "$pass/compile-wrapper-cpp" "$CXX" "${cxxflags_now[@]}" -Iinclude -Ibindings/cpp \
        tests/c/wrapper.cpp -o "$out/wrapper_cpp" "${shared[@]}"
    expect "$pass/wrapper-cpp" 0 "" wrapper_cpp @DIR@/ase.conf <<EOF
config_check: ok
config_notice: none
config_fail_verdict: action $(printf %u 0) reason 9
tick: next in some ms
health: store ok, fail_mode inactive
check: action 0 api shop
abs_report: ok
abs_status: not configured
abs_sync_now: error 300
stats: checked 1, allowed for no reason 1
result_str: ok
EOF

    # --- the multi-threaded server ---
    serves "$pass/server"

    expect "$pass/lists-health" 0 "" lists @DIR@/ase.conf health <<'EOF'
store ok
fail_mode inactive
abs not configured
EOF

    # --- error paths: the message a user sees, status 1 ---
    local missing="invalid configuration file: @DIR@/missing.conf: cannot read: No such file or directory (os error 2)"
    expect "$pass/check-missing-config" 1 "check: $missing" check @DIR@/missing.conf </dev/null
    expect "$pass/check-cpp-missing-config" 1 "check: $missing" check_cpp @DIR@/missing.conf </dev/null
    expect "$pass/lists-missing-config" 1 "lists: $missing" lists @DIR@/missing.conf stats </dev/null

    printf 'enable_firewall=true\nenable_xff=maybe\n' >"$tmp/bad.conf"
    expect "$pass/check-bad-config" 1 \
        "check: invalid configuration file: $tmp/bad.conf:2: enable_xff: expected true or false, got \"maybe\"" \
        check "$tmp/bad.conf" </dev/null

    local invalid_id="invalid identifier: empty value, bad IP or CIDR, or wrong name"
    expect "$pass/lists-bad-ip" 1 "lists: deny-add ip 1.2.3.999: $invalid_id" \
        lists @DIR@/ase.conf deny-add ip 1.2.3.999 </dev/null
    expect "$pass/lists-bad-cidr" 1 "lists: allow-add ip 10.0.0.0/33: $invalid_id" \
        lists @DIR@/ase.conf allow-add ip 10.0.0.0/33 </dev/null
    expect "$pass/lists-empty-value" 1 "lists: deny-add token : $invalid_id" \
        lists @DIR@/ase.conf deny-add token "" </dev/null
    expect "$pass/check-bad-identifier" 1 "check: argument 2: $invalid_id" \
        check @DIR@/ase.conf '!deny ip not-an-ip' </dev/null
    expect "$pass/check-cpp-bad-identifier" 1 "check: argument 2: $invalid_id" \
        check_cpp @DIR@/ase.conf '!deny ip not-an-ip' </dev/null
    expect "$pass/lists-remove-absent" 1 "lists: deny-remove ip 192.0.2.1: no such entry" \
        lists @DIR@/ase.conf deny-remove ip 192.0.2.1 </dev/null
    expect "$pass/lists-unknown-api" 1 "lists: blocking nosuchapi on: no API has this name" \
        lists @DIR@/ase.conf blocking nosuchapi on </dev/null
    expect "$pass/lists-usage" 2 "usage: lists CONFIG COMMAND [ARG]...  or  lists CONFIG -f FILE
  COMMAND: deny-add|deny-remove|allow-add|allow-remove KIND [NAME] VALUE,
           deny-list|deny-clear [SOURCE], allow-list, allow-clear,
           switch SWITCH [on|off], blocking API on|off, stats" lists @DIR@/ase.conf </dev/null

}

test_all() {
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    build
    valgrind=
    if [ "${VALGRIND:-1}" != 0 ] && command -v valgrind >/dev/null; then
        valgrind=1
        echo "examples: running under valgrind"
    fi
    suite release
    build asan
    valgrind=
    suite asan
    echo "examples: $passed passed, $failed failed"
    [ "$failed" = 0 ]
}

case "${1:-}" in
build) build ;;
test) test_all ;;
*)
    echo "usage: $0 build|test" >&2
    exit 2
    ;;
esac
