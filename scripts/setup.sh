#!/usr/bin/env bash
# Installs everything pystack needs on a fresh Debian 12 machine, as root.
# Idempotent and quick when already done: each step checks before it acts.
#   Debian packages -> bcc kernel-header links -> bpffs -> .venv -> pip install -e .[test]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: must run as root (installs Debian packages and loads XDP programs)" >&2
    exit 1
fi

# 1. Debian packages. bcc comes from Debian (python3-bpfcc), never from PyPI.
PKGS=(
    python3-bpfcc linux-headers-amd64 libxdp-dev libbpf-dev kmod iproute2 ethtool
    python3-venv python3-dev gcc make curl tcpdump iputils-ping prometheus
)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. bcc compiles against Debian's headers; the running kernel has none (PLATFORM.md).
KVER="$(uname -r)"
HDR="$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)"
COMMON="${HDR%-amd64}-common"
if [ -z "$HDR" ] || [ ! -d "$COMMON" ]; then
    echo "setup: no Debian kernel headers under /usr/src (linux-headers-amd64 failed?)" >&2
    exit 1
fi
mkdir -p "/lib/modules/$KVER"
[ "$(readlink "/lib/modules/$KVER/build" 2>/dev/null)" = "$HDR" ] || ln -sfn "$HDR" "/lib/modules/$KVER/build"
[ "$(readlink "/lib/modules/$KVER/source" 2>/dev/null)" = "$COMMON" ] || ln -sfn "$COMMON" "/lib/modules/$KVER/source"

# 3. bpffs, for anything that pins.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true

# 4. Virtualenv on Debian's python3 so `import bcc` works (PLATFORM.md).
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import bcc' 2>/dev/null; then
    log "creating .venv"
    rm -rf .venv
    /usr/bin/python3 -m venv --system-site-packages .venv
fi

# 5. The package, its cffi extension and test extras. Re-run only when inputs change.
STAMP=.venv/.pystack-installed
SUM="$(cat pyproject.toml setup.py pystack/io/_build.py pystack/io/*.c pystack/io/*.h 2>/dev/null | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$SUM" ] || ! .venv/bin/python -c 'import pystack.io._xsk' 2>/dev/null; then
    log "installing pystack into .venv"
    if ! { .venv/bin/python -m pip install -q --upgrade pip &&
           .venv/bin/python -m pip install -q -e '.[test]'; } >.venv/pip.log 2>&1; then
        cat .venv/pip.log >&2
        echo "setup: pip install failed (log above, also in .venv/pip.log)" >&2
        exit 1
    fi
    echo "$SUM" > "$STAMP"
fi
