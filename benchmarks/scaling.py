"""How a training step scales with threads: the seed and wide configurations at 1, 2, 4, ... threads
up to every core, each in a clean subprocess (``benchmarks/profile_step.py --json``).

    python benchmarks/scaling.py [--threads 1,2] [--rows 12800] [--repeats 3] [--configs seed,wide]

Each thread count runs in a fresh interpreter with the environment that ``benchmarks/peers.py``
gives its workers (a whitelist of the caller's variables, the BLAS/OpenMP thread counts set to
the count; plus ``FASTNN_DATA``, ``FASTNN_PARALLEL``, ``FASTNN_BLAS`` and ``NUMBA_CACHE_DIR`` where set), so no
pool of an earlier run is warm. Prints samples/s, the matrix products' time alone and the rest of
the step (what fastnn's own passes cost), each stage, the CPU and fastnn's threading layer.
"""
import argparse
import json
import os
import platform
import subprocess
import sys

CONFIGS = {"seed": ("784,100,50,10", 50), "wide": ("784,1024,1024,10", 256)}
CLEAN_ENV_NAMES = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TERM",
                   "VIRTUAL_ENV", "PYTHONPATH", "FASTNN_DATA", "FASTNN_PARALLEL", "FASTNN_BLAS", "NUMBA_CACHE_DIR")
THREAD_ENV_NAMES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
PROFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profile_step.py")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def thread_counts(cores):
    counts, n = [], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return counts + [cores]


def run(config, threads, rows, repeats):
    sizes, batch = CONFIGS[config]
    env = {k: os.environ[k] for k in CLEAN_ENV_NAMES if k in os.environ}
    env.update({k: str(threads) for k in THREAD_ENV_NAMES})
    env.setdefault("PYTHONPATH", os.path.dirname(os.path.dirname(PROFILE)))  # this checkout's fastnn
    done = subprocess.run([sys.executable, PROFILE, "--json", "--threads", str(threads), "--batch", str(batch),
                           "--sizes", sizes, "--repeats", str(repeats), "--rows", str(rows)],
                          env=env, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"{config} at {threads} threads failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cores = os.cpu_count() or 1
    parser.add_argument("--threads", default=",".join(map(str, thread_counts(cores))))
    parser.add_argument("--rows", type=int, default=12800, help="MNIST rows per epoch (0: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", default="seed,wide")
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_name()}, {cores} logical cores; FASTNN_PARALLEL={os.environ.get('FASTNN_PARALLEL', '(default)')}")
    results = []
    for config in args.configs.split(","):
        for threads in map(int, args.threads.split(",")):
            r = run(config, threads, args.rows, args.repeats)
            results.append(r)
            if len(results) == 1:
                print(f"fastnn kernels: {r['kernels']}; parallel passes: {', '.join(r['parallel_passes']) or 'none'}")
            step, products = r["step_us"], r["products_us"]
            rest = step - products
            stages = "  ".join(f"{k} {v:.0f}" for k, v in r["stages_us"].items())
            print(f"{config:>5} x{threads:<3} {r['batch'] / step * 1e6:>9,.0f} samples/s  step {step:8.0f} us  "
                  f"products {products:8.0f} us ({products / step:4.0%})  rest {rest:7.0f} us ({rest / step:4.0%})"
                  f"   [{stages} us]")
    return results


if __name__ == "__main__":
    main()
