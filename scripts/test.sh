#!/usr/bin/env bash
# Installs gradserve (server, Python client, dev tools) into ./.venv and runs the whole test
# suite. Arguments go to pytest: `scripts/test.sh tests/core -x`. Chromium, which the
# dashboard's browser tests drive, is installed with apt-get when missing (as root, or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "gradserve needs Python 3.11 or newer; python3 is $(python3 --version 2>&1)" >&2; exit 1; }
if ! command -v chromium >/dev/null; then
  if command -v apt-get >/dev/null; then
    sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
    echo "installing chromium for the dashboard's browser tests (tests/ui) ..." >&2
    { $sudo apt-get update -q && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; } >&2
  else
    echo "warning: no chromium on PATH and no apt-get to install it: tests/ui will fail until it is installed" >&2
  fi
fi
python3 -m venv .venv
echo "installing gradserve and its dev tools into ./.venv (log: .venv/install.log) ..." >&2
if ! { .venv/bin/python -m pip install --upgrade pip \
       && .venv/bin/python -m pip install -e '.[dev,ray]' -e 'clients/python[progress,pandas]'; } >.venv/install.log 2>&1; then
  tail -n 40 .venv/install.log >&2
  echo "install failed; the whole log is in .venv/install.log" >&2
  exit 1
fi
exec .venv/bin/python -m pytest -q "$@"
