#!/usr/bin/env bash
# Install ufarsap-engine and everything it needs on a fresh machine (idempotent).
#   bash scripts/setup.sh                  # engine + test tools
#   bash scripts/setup.sh --with-postgres  # also PostgreSQL 15 for the registry tests (needs root/apt)
#   bash scripts/setup.sh --with-browser   # also Chromium + chromedriver for the dashboard's browser test (root/apt)
# PYTHON=/path/to/python picks the interpreter (default: python3 on PATH, a venv's when active).
# Each step says what it does; pip and apt show their own progress (a first install takes minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
WITH_PG=""
WITH_BROWSER=""
for arg in "$@"; do
    case "$arg" in
        --with-postgres) WITH_PG=1 ;;
        --with-browser) WITH_BROWSER=1 ;;
        *) echo "setup.sh: unknown option $arg (use --with-postgres and/or --with-browser)" >&2; exit 2 ;;
    esac
done
STEPS=$((2 + ${WITH_PG:-0} + ${WITH_BROWSER:-0}))
N=2
START=$SECONDS
step() { echo "==> setup [$1/$STEPS] $2"; }

step 1 "torch 2.13.0 (the CPU build) into $("$PY" -c 'import sys; print(sys.prefix)')"
# The local CPU build of torch first: a bare `torch` requirement can pull a multi-GB CUDA build.
if "$PY" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
    echo "    already installed"
else
    "$PY" -m pip install --disable-pip-version-check torch==2.13.0
fi

step 2 "ufarsap-engine (editable) with its dependencies, the test/eval tools and the trackers"
"$PY" -m pip install --disable-pip-version-check -e ".[test,eval,tensorboard,mlflow]"

if [ -n "$WITH_PG" ]; then
    N=$((N + 1))
    step $N "PostgreSQL for the registry tests"
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        echo "    installing the Debian package postgresql"
        apt-get update -q
        apt-get install -y -q postgresql
    fi
    URL="$(bash scripts/start-postgres.sh)"
    echo "    running: $URL (the tests find it; or export UFARSAP_TEST_PG_URL=$URL)"
fi
if [ -n "$WITH_BROWSER" ]; then
    N=$((N + 1))
    step $N "Chromium and chromedriver (Debian packages) for the dashboard's browser test"
    if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q chromium chromium-driver
    else
        echo "    already installed"
    fi
fi
echo "==> setup done in $((SECONDS - START)) s"
