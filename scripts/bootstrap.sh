#!/usr/bin/env bash
# Set up cosyfast on a Debian/Ubuntu machine: a virtual environment in .venv with torch (CPU
# build without an NVIDIA GPU, CUDA build with one) and the requirements. Idempotent: a stamp
# file remembers what was installed, so a second run takes about a second.
#
#   scripts/bootstrap.sh            runtime packages (+ ffmpeg from apt when missing)
#   scripts/bootstrap.sh --dev      also the test packages and Debian's chromium (browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[ "${1:-}" = "--dev" ] && DEV=1
PYTHON=${PYTHON:-python3}
CPU_TORCH_VERSION=2.13.0

log() { printf '[bootstrap] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi
}

apt_install() {  # apt_install <command to look for> <debian packages...>
    local probe=$1; shift
    command -v "$probe" >/dev/null && return 0
    command -v apt-get >/dev/null || { log "no apt-get: install $* yourself"; return 0; }
    log "installing $* (apt)"
    if ! { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@"; } >/dev/null; then
        log "could not install $* (no root?); some features will be missing"
    fi
}

# --- system packages: ffmpeg decodes browser recordings (webm/opus) and encodes mp3/ogg downloads
apt_install ffmpeg ffmpeg
[ $DEV = 1 ] && apt_install chromium chromium chromium-driver

# --- Python
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    log "Python 3.10 or newer is needed ($PYTHON is $("$PYTHON" --version 2>&1))"; exit 1
fi
if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    "$PYTHON" -m venv .venv || { apt_install false python3-venv; "$PYTHON" -m venv .venv; }
fi
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)

stamp_of() { cat "$@" scripts/bootstrap.sh | sha256sum | cut -c1-16; }
want_rt=$(stamp_of requirements.txt)
want_dev=$(stamp_of requirements.txt requirements-dev.txt)
have=$(cat .venv/.cosyfast-stamp 2>/dev/null || true)
if [ "$have" = "$want_rt" ] && [ $DEV = 0 ]; then exit 0; fi
if [ "$have" = "$want_dev" ]; then exit 0; fi

if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        log "NVIDIA GPU found: installing the CUDA build of torch"
        "${PIP[@]}" install torch
    else
        log "no NVIDIA GPU: installing the CPU build of torch $CPU_TORCH_VERSION"
        "${PIP[@]}" install --retries 0 --timeout 20 --index-url https://download.pytorch.org/whl/cpu \
            "torch==$CPU_TORCH_VERSION" 2>/dev/null || "${PIP[@]}" install "torch==$CPU_TORCH_VERSION"
    fi
fi
log "installing requirements"
"${PIP[@]}" install -r requirements.txt
if [ $DEV = 1 ]; then
    "${PIP[@]}" install -r requirements-dev.txt
    echo "$want_dev" > .venv/.cosyfast-stamp
else
    echo "$want_rt" > .venv/.cosyfast-stamp
fi
log "ready"
