#!/usr/bin/env bash
# Thin wrapper for users who expect scripts; the same as `python -m lorakit.sweeps`:
#   launch/sweep.sh run launch/sweeps/embedded_mini.yaml [--backend slurm] [--dry-run] [--retry-failed]
#   launch/sweep.sh status launch/sweeps/embedded_mini.yaml
#   launch/sweep.sh report launch/sweeps/embedded_mini.yaml
set -euo pipefail
project="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$([ -x "$project/.venv/bin/python" ] && echo "$project/.venv/bin/python" || echo python3)}"
PYTHONPATH="$project${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m lorakit.sweeps "$@"
