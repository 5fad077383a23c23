#!/usr/bin/env bash
# Installs gradserve (server and Python client) into ./.venv and serves it on
# http://127.0.0.1:8000 with its models in ./data. Extra arguments go to `gradserve serve`
# and win over these defaults, e.g. `scripts/serve.sh --port 9000 --durability interval`.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "gradserve needs Python 3.11 or newer; python3 is $(python3 --version 2>&1)" >&2; exit 1; }
[[ -x .venv/bin/python ]] || python3 -m venv .venv

# Install when the venv is new or a pyproject changed since the last install (the code
# itself is installed in editable mode, so edits need no reinstall).
stamp=.venv/.gradserve-installed
wanted="$(cat pyproject.toml clients/python/pyproject.toml | sha256sum)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$wanted" || ! -x .venv/bin/gradserve ]] \
   || ! .venv/bin/python -I -c 'from core import Model; import service.cli, gradserve_client' 2>/dev/null; then
  echo "installing gradserve into ./.venv (log: .venv/install.log) ..." >&2
  if ! { .venv/bin/python -m pip install --upgrade pip \
         && .venv/bin/python -m pip install -e . -e 'clients/python[progress]'; } >.venv/install.log 2>&1; then
    tail -n 40 .venv/install.log >&2
    echo "install failed; the whole log is in .venv/install.log" >&2
    exit 1
  fi
  echo "$wanted" >"$stamp"
fi

exec .venv/bin/gradserve serve --host 127.0.0.1 --port 8000 --data-dir ./data "$@"
