#!/usr/bin/env bash
# Installs everything World-R1 Studio needs on a fresh Debian machine (run as root):
# system libraries, a .venv in the repo, the pinned requirements. Quick when nothing changed.
#   bash scripts/setup.sh          # the studio
#   bash scripts/setup.sh --test   # the studio, Chromium for end-to-end tests and PostgreSQL for the
#                                  # study database tests (they start a throwaway server of their own)
set -euo pipefail
cd "$(dirname "$0")/.."

apt_pkgs=($(grep -v '^#' packages.txt))   # the Space's list too; open3d needs libusb-1.0.so.0 to import
[[ "${1:-}" == "--test" ]] && apt_pkgs+=(chromium chromium-driver postgresql)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "setup: installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt <(.venv/bin/python --version) | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || "$(cat $stamp)" != "$want" ]]; then
  echo "setup: installing Python requirements (first run: about 3 minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi
echo "setup: ready"
