#!/usr/bin/env bash
# Installs gradserve (server, client, dev tools) into ./.venv and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[dev]' -e clients/python
exec .venv/bin/python -m pytest -q "$@"
