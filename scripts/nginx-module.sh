#!/usr/bin/env bash
# The nginx module against Debian's packaged nginx.
#
#   scripts/nginx-module.sh build  builds target/nginx/ngx_http_ase_module.so
#   scripts/nginx-module.sh test   runs the end-to-end tests (a real nginx on
#                                  127.0.0.1 loading the module)
#
# build copies nginx-dev's tree (/usr/share/nginx/src, or $NGINX_SRC), runs
# its configure with Debian's own flags (conf_flags, --with-compat) and
# --add-dynamic-module, then `make modules`, as Debian's dh_nginx does.
# libase.a is linked into the module (see nginx-module/config).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/target/nginx
src=${NGINX_SRC:-/usr/share/nginx/src}
module=$out/ngx_http_ase_module.so

# Debian's flags plus -Wextra -Werror; -Wno-unused-parameter as nginx's own
# build (handler signatures are fixed by nginx).
cc_opt="-g -O2 -fstack-protector-strong -Wformat -Werror=format-security"
cc_opt+=" -fPIC -D_FORTIFY_SOURCE=2"
cc_opt+=" -Wall -Wextra -Wno-unused-parameter -Werror"
ld_opt="-Wl,-z,relro -Wl,-z,now -fPIC"

build() {
    if [ ! -x "$src/configure" ]; then
        echo "nginx-module: no nginx source tree at $src (install nginx-dev)" >&2
        exit 1
    fi
    # Cargo decides whether the library is up to date (a no-op when it is).
    (cd "$root" && cargo build --release --lib --quiet)
    local tree=$out/build
    # Reconfigure when the addon's config changed or the tree is new.
    if [ ! -f "$tree/objs/Makefile" ] \
        || [ "$root/nginx-module/config" -nt "$tree/objs/Makefile" ]; then
        rm -rf "$tree"
        mkdir -p "$tree"
        cp -a "$src/." "$tree/"
        local NGX_CONF_FLAGS=()
        # shellcheck disable=SC1091
        . "$tree/conf_flags"
        (cd "$tree" && ./configure "${NGX_CONF_FLAGS[@]}" \
            --with-cc-opt="$cc_opt" --with-ld-opt="$ld_opt" \
            --add-dynamic-module="$root/nginx-module") \
            >"$out/configure.log" 2>&1 || {
            tail -30 "$out/configure.log" >&2
            echo "nginx-module: configure failed (log: $out/configure.log)" >&2
            exit 1
        }
    fi
    # libase.a is an input make does not track; relink when it is newer.
    local so=$tree/objs/ngx_http_ase_module.so
    if [ "$root/target/release/libase.a" -nt "$so" ]; then
        rm -f "$so"
    fi
    make -C "$tree" -f objs/Makefile modules >"$out/make.log" 2>&1 || {
        tail -40 "$out/make.log" >&2
        echo "nginx-module: make failed (log: $out/make.log)" >&2
        exit 1
    }
    # Replaced, not overwritten: a running nginx has the old file mapped.
    cp "$so" "$module.new"
    mv -f "$module.new" "$module"
    echo "nginx-module: built $module"
}

run_tests() {
    build >/dev/null
    local nginx=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
    python3 "$root/nginx-module/t/e2e.py" --nginx "$nginx" --module "$module" \
        --root "$root" "$@"
}

case "${1:-}" in
    build) build ;;
    test) shift; run_tests "$@" ;;
    *) echo "usage: $0 build|test [test names...]" >&2; exit 2 ;;
esac
