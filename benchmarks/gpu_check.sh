#!/usr/bin/env bash
# Everything that needs an NVIDIA GPU, in one go: the CUDA tests on the device (the simulator
# is off where a driver is visible), then benchmarks/gpu.py with per-kernel profiles and the
# tile search. Logs and the benchmark's JSON go to the folder given (default: gpu-check/).
#
#     bash benchmarks/gpu_check.sh [OUTDIR] [TEST_SECONDS] [BENCH_SECONDS]
#
# Each part runs under its own time limit and the next part runs whatever the last one did.
set -u
cd "$(dirname "$0")/.."
out="${1:-gpu-check}"; mkdir -p "$out"
test_s="${2:-180}"; bench_s="${3:-240}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$out/nvidia-smi.txt"
python3 -c "import numpy, numba, numba.cuda as c; print('numpy', numpy.__version__, 'numba', numba.__version__, 'gpu', c.is_available())" 2>&1
t0=$(date +%s)
timeout "$bench_s" python3 benchmarks/gpu.py --profile --tiles --epochs 3 --repeats 10 --json "$out/gpu.json" 2>&1 | tee "$out/bench.log"
echo "benchmark: exit ${PIPESTATUS[0]} after $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
timeout "$test_s" python3 -m pytest -q -rf --tb=short -p no:cacheprovider \
    tests/test_cuda_kernels.py tests/test_cuda_model.py tests/test_cuda_dropout.py tests/test_cuda_compile.py \
    2>&1 | tee "$out/tests.log" | tail -40
echo "cuda tests: exit ${PIPESTATUS[0]} after $(( $(date +%s) - t0 )) s"
timeout 90 python3 -m pytest -q -rf --tb=short -p no:cacheprovider -k cuda tests/test_clipping.py tests/test_regularizers.py \
    tests/test_schedules.py tests/test_kernels_dispatch.py tests/test_validation.py 2>&1 | tee "$out/tests_k_cuda.log" | tail -20
# A memory check of one short training run on the device, where compute-sanitizer is installed.
if command -v compute-sanitizer > /dev/null; then
    timeout 150 compute-sanitizer --tool memcheck --print-limit 20 python3 -m pytest -q -p no:cacheprovider \
        tests/test_cuda_model.py -k "fit_predict_evaluate_match_cpu" 2>&1 | tee "$out/memcheck.log" | tail -15
fi
