#!/usr/bin/env bash
# The GPU check on a lent GPU machine, from the repository root (docs/benchmarks.md, "The GPU check"):
#   device run, carry [".whl"], timeout_s 330:  bash benchmarks/gpu_check.sh
# Installs the wheels that `python -m benchmarks.gpu_check carry` put in .whl/ (the machine reaches no registry) into a
# scratch folder, then runs the plan into $OUT (or the folder given first); further arguments (--only, --budget,
# --smoke) go to `run`.
set -uo pipefail
python="${PYTHON:-python3}"  # the GPU image's python3 holds its torch
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then out="$1"; shift; else out="${OUT:?give an output folder, or set OUT}"; fi
out="$(realpath -m "$out")"
cd "$(dirname "$0")/.." || exit 2
if compgen -G ".whl/*.whl" >/dev/null; then
    site="$(mktemp -d)"
    trap 'rm -rf "$site"' EXIT
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        .whl/*.whl || { echo "gpu_check: error: installing the carried wheels failed" >&2; exit 2; }
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$python" -m benchmarks.gpu_check run --out "$out" "$@"
