#!/usr/bin/env bash
# Installs what the test suite needs and runs all of it (README's second command; .ci/run runs it).
#   - Debian's kcat (a real Kafka client for the Kafka front door's tests), with apt-get
#     as root or through sudo, when it is not installed yet;
#   - a venv with zbroker and its test extras (pytest, the Python Kafka clients, ...).
# Arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v kcat >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -qq kcat >/dev/null 2>&1 || { $sudo apt-get update -qq && $sudo apt-get install -y -qq kcat; }
fi
python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
exec .venv/bin/pytest "$@"
