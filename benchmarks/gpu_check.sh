#!/usr/bin/env bash
# The GPU check on a lent GPU machine, from the repository root (docs/benchmarks.md, "The GPU check"):
#   device run, carry [".whl"], timeout_s 330:  bash benchmarks/gpu_check.sh
# Installs the wheels that `python -m benchmarks.gpu_check carry` put in .whl/ (the machine reaches no registry), then
# runs the plan into $OUT (or the folder given first); further arguments go to `run`.
set -uo pipefail
python="${PYTHON:-python3}"  # the GPU image's python3 holds its torch
out="$(realpath -m "${1:-${OUT:?give an output folder, or set OUT}}")"
cd "$(dirname "$0")/.." || exit 2
if compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site \
        .whl/*.whl || { echo "gpu_check: error: installing the carried wheels failed" >&2; exit 2; }
    export PYTHONPATH="/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$python" -m benchmarks.gpu_check run --out "$out" "${@:2}"
