"""Data-parallel training over MPI: samples/s with 1 and 2 ranks, and when more ranks pay.

    python benchmarks/distributed.py [--ranks 2] [--quick] [--json out.json]

(needs ``pip install "fastnn[mpi]"``; ``FASTNN_DATA`` or the user cache for MNIST, else random
data of MNIST's shape). Every measurement runs in a process of its own, started by this script:

1. One process (``python``), with 1 BLAS thread and with as many threads as ranks: fastnn's
   ordinary training, the figure that the ranks have to beat with the same cores.
2. ``mpirun -n R`` with 1 BLAS thread per rank (R ranks x 1 thread use the same cores as one
   process with R threads).

Both train the seed network (784-100-50-10, batch 50) and the wide one (784-1024-1024-10, batch
256) on MNIST (median of 3 epochs, one warm-up epoch first; the wide one over its first 15,360
rows), with Adam, float32. ``batch_size`` is the global batch in both: the same steps, the same
weights.

Then the cost model. A step on R ranks costs the compute of a 1/R share of the batch on one
thread, C1(B / R), plus the allreduce of the gradients, A(P) for P parameters (4P bytes in
float32). One process with R threads costs C_R(B). Scaling pays where
C1(B / R) + A(P) < C_R(B). The script measures C1 and C_R at widths 64-2048 (784-w-w-10) and
batches 32-2048, and A(P) for those models' sizes in the R-rank job, and prints the predicted
speedup C_R(B) / (C1(B / R) + A(P)) for each; the seed and wide rows check the model against
the measured figures. On one machine the ranks share its memory bandwidth and caches, which the
model ignores; across machines, A(P) is the network's: measure it there (docs/distributed.md).

Not an asv benchmark (asv imports it while discovering the suite: no name here starts with time_).
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NETWORKS = {"seed": ([784, 100, 50, 10], 50, 60000), "wide": ([784, 1024, 1024, 10], 256, 15360)}
WIDTHS = [64, 256, 1024, 2048]
BATCHES = [32, 128, 512, 2048]
ENV_SHOWN = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_CACHE_DIR",
             "FASTNN_NO_CACHE", "OMPI_MCA_btl", "OMPI_MCA_pml")


# --------------------------------------------------------------------------------------------
# Worker: one process of the measurement (alone, or one rank of an MPI job)
# --------------------------------------------------------------------------------------------

def load_data(rows):
    import numpy as np
    import fastnn
    try:
        x, y, _, _ = fastnn.load_mnist()
        source = "MNIST"
    except Exception:  # no files and no network: random data of the same shape
        rng = np.random.default_rng(0)
        x, y, source = rng.random((60000, 784), dtype=np.float32), rng.integers(0, 10, 60000), "random"
    return x[:rows], y[:rows], source


def model_for(sizes):
    import fastnn
    layers = [fastnn.Dense(a, b, activation="relu") for a, b in zip(sizes[:-2], sizes[1:-1])]
    layers.append(fastnn.Dense(sizes[-2], sizes[-1], activation="softmax"))
    return fastnn.MLP(layers, seed=0).compile("cross_entropy", fastnn.Adam(1e-3))


def fit_seconds(model, x, y, batch_size, repeats):
    """Median seconds of one epoch of fit over (x, y), after one warm-up epoch."""
    model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_seconds(sizes, batch, steps):
    """Median seconds of one training step of 784-w-w-10 at ``batch`` rows (fit over ``steps`` batches)."""
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.random((batch * steps, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], batch * steps)
    return fit_seconds(model_for(sizes), x, y, batch, 3) / steps


def allreduce_seconds(size_, repeats=30):
    """Median seconds of an MPI allreduce (sum) of ``size_`` float32 values over the job."""
    import numpy as np
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    send, recv = np.ones(size_, np.float32), np.empty(size_, np.float32)
    times = []
    for _ in range(repeats):
        comm.Barrier()
        start = time.perf_counter()
        comm.Allreduce(send, recv)
        times.append(time.perf_counter() - start)
    return statistics.median(comm.allgather(statistics.median(times)))  # the ranks' median


def params_of(sizes):
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def worker(args):
    """One measurement process: ``--networks`` times fit on the seed and wide networks (and, in
    an MPI job, the allreduce of their gradients); ``--grid`` the steps of the cost model's grid
    at batch / ``--share`` (alone: the allreduce of their sizes)."""
    import fastnn
    rank, size = fastnn.distributed.init()
    fastnn.set_num_threads(args.threads)
    out = {"rank_count": size, "threads": args.threads, "networks": {}, "steps": {}, "allreduce": {},
           "environ": {k: os.environ[k] for k in ENV_SHOWN if k in os.environ},
           "threading": fastnn.threading_info()}
    if size > 1:
        from mpi4py import MPI
        out["mpi"] = MPI.Get_library_version().splitlines()[0].strip()
    quick = args.quick
    for name, (sizes, batch, rows) in NETWORKS.items():
        if args.networks:
            x, y, source = load_data(rows // 10 if quick else rows)
            seconds = fit_seconds(model_for(sizes), x, y, batch, 1 if quick else 3)
            out["networks"][name] = {"samples_per_s": x.shape[0] / seconds, "batch": batch, "rows": x.shape[0],
                                     "params": params_of(sizes), "data": source}
        if args.grid:  # C(B / share) for the network
            out["steps"][f"{name}/{batch // args.share}"] = step_seconds(sizes, batch // args.share, 4 if quick else 64)
        if size > 1:
            out["allreduce"][str(params_of(sizes))] = allreduce_seconds(params_of(sizes), 5 if quick else 30)
    for w in WIDTHS:
        sizes = [784, w, w, 10]
        if size > 1:
            out["allreduce"][str(params_of(sizes))] = allreduce_seconds(params_of(sizes), 5 if quick else 30)
        elif args.grid:
            for b in BATCHES:
                b_local = b // args.share
                steps = max(4, min(64, int(2e10 / (6 * params_of(sizes) * b_local))))  # about 0.1-1 s per fit
                out["steps"][f"{w}/{b_local}"] = step_seconds(sizes, b_local, 4 if quick else steps)
    if rank == 0:
        with open(args.out, "w") as f:
            json.dump(out, f)


# --------------------------------------------------------------------------------------------
# Parent: start the workers, print the report
# --------------------------------------------------------------------------------------------

def mpirun_path():
    beside = os.path.join(os.path.dirname(sys.executable), "mpirun")
    return beside if os.path.exists(beside) else shutil.which("mpirun")


MPIRUN_ARGS = []


def start_worker(threads, flags, ranks=1):
    """Start one worker (an MPI job of ``ranks`` ranks when ranks > 1); returns (process, output path)."""
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--threads", str(threads), "--out", out] + flags
    env = dict(os.environ)
    if ranks > 1:
        mpirun = mpirun_path()
        if mpirun is None:
            raise SystemExit("no mpirun: pip install \"fastnn[mpi]\"")
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # Open MPI refuses root without these
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        command = [mpirun, "-n", str(ranks), "--oversubscribe", "--bind-to", "none"] + MPIRUN_ARGS + command
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL)
    return process, out


def finish_worker(started):
    process, out = started
    _, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"worker failed ({' '.join(process.args[:6])} ...):\n{stderr[-4000:]}")
    with open(out) as f:
        result = json.load(f)
    os.unlink(out)
    return result


def run_worker(threads, flags, ranks=1):
    return finish_worker(start_worker(threads, flags, ranks))


def run_side_by_side(copies, threads, flags):
    """``copies`` independent workers at once (no MPI): each step time is the slowest copy's, as
    ranks that compute at the same time share the machine's caches, memory and clocks."""
    results = [finish_worker(s) for s in [start_worker(threads, flags) for _ in range(copies)]]
    merged = results[0]
    merged["steps"] = {k: max(r["steps"][k] for r in results) for k in merged["steps"]}
    return merged


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2, help="ranks of the MPI job (default 2)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the rows, one timed epoch")
    parser.add_argument("--no-grid", action="store_true", help="skip the cost model's grid")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--mpirun-args", default="", help="more arguments for mpirun, e.g. \"-H node1:1,node2:1\"")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--networks", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--grid", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--share", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    sys.path.insert(0, HERE)
    from peers import cpu_info
    r = args.ranks
    MPIRUN_ARGS[:] = args.mpirun_args.split()
    grid = not args.no_grid
    quick = ["--quick"] if args.quick else []
    cpu = cpu_info()
    print(f"CPU: {cpu['model']}; SIMD {' '.join(cpu['simd'])}; {cpu['logical']} logical CPUs, {cpu['cores']} cores, "
          f"{cpu['usable']} usable")
    one_1 = run_worker(1, ["--networks"] + quick)
    one_r = run_worker(r, ["--networks"] + (["--grid"] if grid else []) + quick)             # C_R(B)
    shares = run_side_by_side(r, 1, ["--grid", "--share", str(r)] + quick)                 # C1(B / R)
    many = run_worker(1, ["--networks"] + quick, ranks=r)                                   # R ranks, A(P)
    print(f"Python {platform.python_version()}; MPI: {many['mpi']}")
    print(f"threads: one process {json.dumps(one_r['threading'])}")
    print(f"environment of the workers (as this process passed it): {json.dumps(many['environ'])}")
    print(f"data: {many['networks']['seed']['data']}; Adam, float32; batch_size is the global batch; "
          "model: C_R(B) / (C1(B/R) + A(P))\n")

    print(f"{'network':8} {'batch':>5} {'1 proc x 1 thr':>15} {f'1 proc x {r} thr':>15} {f'{r} ranks x 1 thr':>16} "
          f"{'vs best 1 proc':>14} {'allreduce/step':>15} {'A(P) ms':>8} {'C1(B/R) ms':>10} {'model':>6}")
    rows = {}
    for name in NETWORKS:
        a, b, c = (w["networks"][name]["samples_per_s"] for w in (one_1, one_r, many))
        net = many["networks"][name]
        params, batch = net["params"], net["batch"]
        reduce_s = many["allreduce"][str(params)]
        share_s = shares["steps"][f"{name}/{batch // r}"]
        predicted = (batch / b) / (share_s + reduce_s)
        rows[name] = {"one_process_1_thread": a, f"one_process_{r}_threads": b, f"{r}_ranks": c,
                      "speedup_vs_best_one_process": c / max(a, b), "bytes_allreduced_per_step": 4 * params + 16,
                      "allreduce_seconds": reduce_s, "share_step_seconds": share_s, "predicted_speedup": predicted}
        print(f"{name:8} {batch:5d} {a:15,.0f} {b:15,.0f} {c:16,.0f} {c / max(a, b):13.2f}x "
              f"{(4 * params + 16) / 1e6:12.2f} MB {1e3 * reduce_s:8.3f} {1e3 * share_s:10.3f} {predicted:5.2f}x")
    report = {"cpu": cpu, "mpi": many["mpi"], "ranks": r, "networks": rows}

    if grid:
        print(f"\nCost model: predicted speedup of {r} ranks x 1 thread over one process x {r} threads, "
              f"C_{r}(B) / (C1(B/{r}) + A(P)), 784-w-w-10, Adam, float32")
        print(f"{'width':>6} {'params':>10} {'A(P) ms':>8} " + " ".join(f"{'B=' + str(b):>8}" for b in BATCHES))
        table = {}
        for w in WIDTHS:
            params = params_of([784, w, w, 10])
            reduce_s = many["allreduce"][str(params)]
            cells = [one_r["steps"][f"{w}/{b}"] / (shares["steps"][f"{w}/{b // r}"] + reduce_s) for b in BATCHES]
            table[w] = {"params": params, "allreduce_seconds": reduce_s, "speedup": dict(zip(BATCHES, cells))}
            print(f"{w:6d} {params:10,d} {1e3 * reduce_s:8.3f} " + " ".join(f"{v:7.2f}x" for v in cells))
        report["cost_model"] = table
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
