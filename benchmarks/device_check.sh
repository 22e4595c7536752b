#!/usr/bin/env bash
# The one prepared command for a machine with an NVIDIA GPU and no network: install qkbench from
# this checkout without any index, run the gpu-marked tests, validate the GPU timers against
# triton.testing.do_bench / cupyx.profiler.benchmark / torch.utils.benchmark, and run the
# reference sweep of every GPU backend (benchmarks/reference_sweep.py), writing everything to
# results/reference/<gpu>-<date>/. Each step has a time limit; together they fit in 8 minutes.
#
#   benchmarks/device_check.sh [--wheels DIR] [--out DIR] [--bundle FILE.tar.gz] [--dry-run]
#
# --wheels DIR  wheels for what the machine lacks (default .whl/, if present): pip gets
#               --no-index --find-links DIR. Only qkbench's own requirements are installed,
#               never its extras: the machine's CUDA libraries (cupy-cuda13x, say) stay as they are.
# --out DIR     where to write (default results/reference/<gpu>-<date>)
# --bundle F    also pack the folder into one .tar.gz (a device tool brings back few files)
# --dry-run     on a machine without a GPU: no install, tiny sweeps, every GPU cell skipped;
#               checks that every step runs and writes what it should.
# Writes env.txt, backends.txt, nvidia-smi.txt, timers.csv, runs/ (kernel, transfers,
# attention), FIGURES.md and device_check.log.
# Exit code: 0 when every step passed, 1 when one failed (its log says which), 2 on bad usage.
set -uo pipefail
cd "$(dirname "$0")/.."

wheels=.whl out="" bundle="" dry_run=0
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels=${2:?--wheels needs a folder}; shift 2 ;;
        --out) out=${2:?--out needs a folder}; shift 2 ;;
        --bundle) bundle=${2:?--bundle needs a file name}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        *) echo "device_check.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done

python=${PYTHON:-python3}
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
# JAX would otherwise take 75% of the GPU's memory in its worker, leaving the others none.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
if [ -z "$gpu" ]; then
    if [ "$dry_run" = 0 ]; then
        echo "device_check.sh: nvidia-smi sees no NVIDIA GPU here (on a CPU machine: --dry-run)" >&2
        exit 2
    fi
    gpu="no-gpu"
fi
slug=$(printf '%s' "$gpu" | tr 'A-Z' 'a-z' | sed -e 's/^nvidia //' -e 's/[^a-z0-9]\{1,\}/-/g' \
       -e 's/^-//' -e 's/-$//')
dest=${out:-results/reference/$slug-$(date -u +%Y-%m-%d)}
mkdir -p "$dest" || exit 2
log="$dest/device_check.log"
: > "$log"
failed=()

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log it, remember a failure
    local name=$1 limit=$2 started rc
    shift 2
    started=$(date +%s)
    echo "=== $name (at most ${limit}s): $*" | tee -a "$log"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $(( $(date +%s) - started ))s" | tee -a "$log"
    [ "$rc" = 0 ] || failed+=("$name (exit $rc)")
    return "$rc"
}

install() {
    local find_links=()
    [ -d "$wheels" ] && find_links=(--find-links "$wheels")
    # --no-build-isolation: the build backend (setuptools) is the machine's own, not fetched.
    if "$python" -m pip install --no-index "${find_links[@]}" --no-build-isolation -e .; then
        return 0
    fi
    echo "--- the full install failed; installing qkbench alone and listing what is missing"
    "$python" -m pip install --no-index --no-deps --no-build-isolation -e . || return 1
    "$python" - <<'PY'
import importlib.util, sys
needed = {"numpy": "numpy", "pandas": "pandas", "pyarrow": "pyarrow", "yaml": "pyyaml",
          "pydantic": "pydantic", "tqdm": "tqdm", "threadpoolctl": "threadpoolctl",
          "matplotlib": "matplotlib"}
missing = [pip for module, pip in needed.items() if importlib.util.find_spec(module) is None]
print("missing (carry their wheels in --wheels):", ", ".join(missing) or "nothing")
sys.exit(1 if missing else 0)
PY
}

echo "device check: $gpu -> $dest (dry run: $dry_run)" | tee -a "$log"
if [ "$dry_run" = 0 ]; then
    step "install" 90 install || { echo "cannot go on without qkbench installed" | tee -a "$log"; exit 1; }
fi
nvidia-smi > "$dest/nvidia-smi.txt" 2>&1 || true
"$python" -m qkbench env > "$dest/env.txt" 2>&1 || failed+=("environment")
"$python" -m qkbench backends 2>&1 | tee -a "$log" > "$dest/backends.txt"
cat "$dest/backends.txt"
step "gpu tests" 90 "$python" -m pytest -q -m gpu -p no:cacheprovider tests/
step "timer validation" 90 "$python" benchmarks/validate_timers.py --gpu --rounds 3 \
    --csv "$dest/timers.csv"
sweep_args=("$dest/runs")
[ "$dry_run" = 1 ] && sweep_args+=(--dry-run)
step "reference sweep" 210 "$python" benchmarks/reference_sweep.py "${sweep_args[@]}"
[ -f "$dest/runs/FIGURES.md" ] && cp "$dest/runs/FIGURES.md" "$dest/FIGURES.md"

if [ -n "$bundle" ]; then
    tar -czf "$bundle" -C "$(dirname "$dest")" "$(basename "$dest")" && echo "bundle: $bundle"
fi
if [ ${#failed[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${failed[@]}" | tee -a "$log"
    exit 1
fi
echo "device check passed: $dest" | tee -a "$log"
