#!/usr/bin/env bash
# Regenerates include/ase.h with the pinned cbindgen and fails on any difference.
set -euo pipefail
version=${1:?cbindgen version}
if ! command -v cbindgen >/dev/null || ! cbindgen --version | grep -q " $version\$"; then
    cargo install cbindgen --version "$version" --locked --quiet
fi
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
cbindgen --config cbindgen.toml --crate ase --output "$tmp" 2>/dev/null
if ! diff -u include/ase.h "$tmp"; then
    echo "include/ase.h is stale: run 'make header' and commit it" >&2
    exit 1
fi
echo "check-header: include/ase.h is up to date"
