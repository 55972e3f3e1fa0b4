#!/usr/bin/env bash
# The GPU check, in one go, on a machine with a GPU: the 'cuda' tests against real CuPy, the ops against
# PyTorch, a training step against the PyTorch twin and a short `minidl run --device cuda`.
#
#   bash benchmarks/gpu.sh [OUT_DIR]          # from the repository root; OUT_DIR defaults to $OUT or runs/gpu
#
# Nothing is installed and nothing downloaded: the project runs from PYTHONPATH, under the machine's own
# python3 with its CuPy, PyTorch (CUDA), NumPy and pytest. It takes about 6 minutes and writes the tables
# for benchmarks/RESULTS.md to OUT_DIR/gpu.md (also printed as it goes).
#
# Numba's CUDA kernels need numba-cuda with a NumPy it supports (numba-cuda 0.30.4 cannot import beside
# NumPy 2.5; minidl then runs its CuPy array code and says so). To check the kernels too on such a
# machine, carry a NumPy 2.4 wheel for its Python in .whl/ (see the device tool's notes on wheels):
# the script then repeats the tests and the training step with it.
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-runs/gpu}}
mkdir -p "$OUT_DIR"
REPORT=$OUT_DIR/gpu.md
: >"$REPORT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

note() { printf '%s\n' "$*" | tee -a "$REPORT"; }
section() { note ""; note "## $1"; note ""; note "\`$2\`"; note ""; }
run() {  # run LIMIT_SECONDS COMMAND...: its output to the log, its tables (lines starting with | or #) to the report
    local limit=$1; shift
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT_DIR/last.log" 2>&1
    local status=$?
    cat "$OUT_DIR/last.log" >>"$OUT_DIR/full.log"
    grep -E '^(\||# )' "$OUT_DIR/last.log" | tee -a "$REPORT"
    tail -n 3 "$OUT_DIR/last.log" | grep -vE '^(\||# )' | sed 's/^/    /' | tee -a "$REPORT"
    note "(exit $status, $((SECONDS - start)) s)"
}

note "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
note ""
note "- device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -n 1)"
note "- $($PY - <<'EOF' 2>&1
import importlib.metadata as m, platform
names = ["numpy", "cupy-cuda12x", "cupy-cuda13x", "numba", "numba-cuda", "torch"]
def version(n):
    try:
        return m.version(n)
    except m.PackageNotFoundError:
        return None
print(f"python {platform.python_version()}, " + ", ".join(f"{n} {version(n)}" for n in names if version(n)))
EOF
)"

section "The 'cuda' tests on real CuPy" "MINIDL_TEST_CUDA=cupy $PY -m pytest -q -k cuda tests"
MINIDL_TEST_CUDA=cupy run 180 $PY -m pytest -q -k cuda tests -p no:cacheprovider

section "Ops, forward + backward, minidl / PyTorch" "$PY benchmarks/ops.py --device cuda --repeat 5"
run 60 $PY benchmarks/ops.py --device cuda --repeat 5

section "A training step, minidl / PyTorch twin, same weights" "$PY benchmarks/train_step.py --device cuda"
run 100 $PY benchmarks/train_step.py --device cuda --steps 10

section "The main job, shortened" "MINIDL_RUN_ITERS=400 $PY -m minidl.cli run --device cuda --out $OUT_DIR/main"
MINIDL_RUN_ITERS=${RUN_ITERS:-400} run 120 $PY -m minidl.cli run --device cuda --out "$OUT_DIR/main"

if ls .whl/numpy-*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PYTHONPATH
    section "With the carried NumPy ($($PY -c 'import numpy; print(numpy.__version__)')): the CUDA kernels" \
        "MINIDL_TEST_CUDA=cupy $PY -m pytest -q -k cuda tests; $PY benchmarks/train_step.py --device cuda"
    MINIDL_TEST_CUDA=cupy run 120 $PY -m pytest -q -k cuda tests -p no:cacheprovider
    run 100 $PY benchmarks/train_step.py --device cuda --steps 10
fi
note ""
note "Full output: $OUT_DIR/full.log"
