#!/usr/bin/env bash
# Install ufarsap-engine and everything it needs on a fresh machine (idempotent).
#   bash scripts/setup.sh                  # engine + test tools
#   bash scripts/setup.sh --with-postgres  # also PostgreSQL 15 for the registry tests (needs root/apt)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

# The local CPU build of torch first: a bare `torch` requirement can pull a multi-GB CUDA build.
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
    "$PY" -m pip install -q --disable-pip-version-check torch==2.13.0
fi
"$PY" -m pip install -q --disable-pip-version-check -e ".[test]"

if [ "${1:-}" = "--with-postgres" ]; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq postgresql >/dev/null
    fi
    bash scripts/start-postgres.sh >/dev/null
fi
