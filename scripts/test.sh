#!/usr/bin/env bash
# The whole test suite with every feature. Installs what a fresh Debian
# machine lacks for it (python3, gcc, redis-server, openssl) when it can: as root
# with apt-get, or through sudo. Tests start their own redis-server on
# 127.0.0.1 (random port, password) and stop it; the system service is not
# started. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        sudo_cmd=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo_cmd=(sudo)
    else
        echo "scripts/test.sh: missing ${need[*]}; install them (not root, no sudo)" >&2
        exit 1
    fi
    echo "scripts/test.sh: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Keep the package from starting its service while it installs (as a
    # container image's policy does); the tests start their own servers.
    policy=/usr/sbin/policy-rc.d
    added_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy" >/dev/null
        "${sudo_cmd[@]}" chmod +x "$policy"
        added_policy=1
    fi
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
    if [ -n "$added_policy" ]; then "${sudo_cmd[@]}" rm -f "$policy"; fi
    # Debian's package starts its service; the tests use their own servers.
    if command -v systemctl >/dev/null 2>&1; then
        "${sudo_cmd[@]}" systemctl stop redis-server >/dev/null 2>&1 || true
    fi
fi

exec cargo test --all-features "$@"
