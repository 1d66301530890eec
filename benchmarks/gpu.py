"""fastnn on an NVIDIA GPU against PyTorch CUDA (eager and CUDA graphs), and its SGEMM against cuBLAS.

    python benchmarks/gpu.py [--epochs N] [--configs 0,1,2,3] [--no-torch] [--no-sgemm] [--tiles] [--json FILE]

Needs an NVIDIA GPU, numba-cuda (``pip install -e ".[cuda]"``) and, for the comparison,
PyTorch with CUDA; exits with a message saying what is missing otherwise. ``--smoke`` runs the
script's own code paths on tiny sizes without a GPU (fastnn in Numba's CUDA simulator,
PyTorch on the CPU): a check of the script, not a measurement.

What is measured
----------------
* Training throughput (samples/s) of 784-100-50-10 (batch 50 and 512), 784-1024-1024-10
  (batch 256) and 784-4096-4096-10 (batch 4096): ReLU hidden layers, softmax + cross-entropy,
  Adam(1e-3), float32, shuffled epochs over MNIST's 60,000 training images (``$FASTNN_DATA``;
  random pixels of the same shape when it is absent: throughput does not depend on values).
  Every contender keeps the data set on the GPU and shuffles it there.
* fastnn: ``MLP(device="cuda").fit``; one warm-up epoch (kernel compilation, CUDA-graph
  capture), then ``--epochs`` epochs, each timed from its start to its end, including the
  read-back of its losses; the median epoch is reported.
* PyTorch eager: ``nn.Sequential`` of ``nn.Linear``/``nn.ReLU``, ``F.cross_entropy`` on the
  logits, ``torch.optim.Adam`` (its default, foreach implementation), a batch gathered with
  ``index_select`` from a ``randperm`` made on the device. PyTorch CUDA graph: the same step
  (forward, backward, ``Adam(capturable=True)``) captured once with ``torch.cuda.graph`` and
  replayed after copying each gathered batch into the static inputs. TF32 is off throughout.
  PyTorch drops a last incomplete batch; samples/s counts the samples actually trained.
* SGEMM, C = A @ B for 4096^3 float32 (2 * 4096^3 flop): fastnn's tiled kernel
  (``fastnn.cuda.dense.sgemm``) against cuBLAS through ``torch.matmul``, median of timed
  repeats with the device synchronized, TFLOP/s.
* ``--tiles``: fastnn's SGEMM with each tile configuration on the shapes that the training
  configs use, to check ``fastnn.cuda.dense.choose_tile``.

The goals (the issue on the CUDA path) are printed PASS/FAIL at the end: 784-100-50-10 at batch
50 >= 1x PyTorch with CUDA graphs, 784-1024-1024-10 at batch 256 >= 0.5x, SGEMM 4096^3 >= 50%
of cuBLAS. A contender that fails is reported with its error and the run goes on.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback

import numpy as np

CONFIGS = [  # (hidden widths, batch size)
    ((100, 50), 50),
    ((100, 50), 512),
    ((1024, 1024), 256),
    ((4096, 4096), 4096),
]
SGEMM_SIZE = 4096
# (config index, least fastnn / PyTorch-CUDA-graph ratio); SGEMM: least fraction of cuBLAS.
GOALS = [(0, 1.0), (2, 0.5)]
SGEMM_GOAL = 0.5


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per contender (after one warm-up)")
    p.add_argument("--configs", default="0,1,2,3", help="indices into the config list, comma-separated")
    p.add_argument("--no-torch", action="store_true", help="fastnn only")
    p.add_argument("--no-sgemm", action="store_true", help="skip the SGEMM comparison")
    p.add_argument("--tiles", action="store_true", help="time every SGEMM tile on the configs' shapes")
    p.add_argument("--repeats", type=int, default=20, help="SGEMM repeats")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, no GPU needed: checks this script only")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--tile-candidates", help="tiles to compare instead of the training run: "
                   "'BM,BN,BK,TM,TN;...', each in the NN, TN and NT layouts on the large shapes of the configs")
    p.add_argument("--profile", action="store_true", help="also print fastnn's device time per kernel "
                   "(PyTorch's profiler) for each config")
    return p.parse_args()


# ---- environment --------------------------------------------------------------------------

def require_gpu(smoke):
    """numba.cuda, or exit with a message naming what is missing."""
    if smoke:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    try:
        from numba import cuda
    except ImportError:
        sys.exit("benchmarks/gpu.py: numba.cuda is not installed; pip install -e '.[cuda]' (numba-cuda)")
    if not cuda.is_available():
        sys.exit("benchmarks/gpu.py: no NVIDIA GPU found (numba.cuda.is_available() is False: no GPU or no driver). "
                 "Run it on a machine with an NVIDIA GPU; --smoke checks the script without one.")
    return cuda


def import_torch(smoke, wanted):
    if not wanted:
        return None, "not asked for (--no-torch)"
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed"
    if not smoke and not torch.cuda.is_available():
        return None, "PyTorch has no CUDA"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch, None


def describe(cuda, torch):
    import numba
    import fastnn
    lines = [f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
             f"fastnn {fastnn.__version__}"]
    try:
        from importlib.metadata import version
        lines[0] += f", numba-cuda {version('numba-cuda')}"
    except Exception:
        pass
    if torch is not None:
        lines[0] += f", torch {torch.__version__}"
    try:
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
        lines.append(f"GPU: {name}, compute capability {dev.compute_capability}, "
                     f"{dev.MULTIPROCESSOR_COUNT} SMs, driver {driver_version()}")
    except Exception:
        lines.append("GPU: the CUDA simulator (--smoke)")
    return "\n".join(lines)


def driver_version():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        return out or "unknown"
    except Exception:
        return "unknown (no nvidia-smi)"


def attempt(what, fn, *args):
    """fn(*args), or None with the error printed: one failing contender must not end the run."""
    try:
        return fn(*args)
    except Exception as exc:
        print(f"{what} FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stdout)
        return None


def load_data(smoke):
    if smoke:
        rng = np.random.default_rng(0)
        return rng.random((16, 20), dtype=np.float32), rng.integers(0, 10, 16), "random (smoke)"
    try:
        from fastnn import load_mnist
        x, y, _, _ = load_mnist()
        return x, y, "MNIST"
    except Exception as exc:  # no copy and no network: the shape is what matters here
        rng = np.random.default_rng(0)
        return (rng.random((60000, 784), dtype=np.float32), rng.integers(0, 10, 60000),
                f"random pixels of MNIST's shape (MNIST unavailable: {exc})")


# ---- fastnn -------------------------------------------------------------------------------

def fastnn_model(hidden, n_in):
    from fastnn import MLP, Adam, Dense
    widths = (n_in,) + tuple(hidden)
    layers = [Dense(a, b, activation="relu") for a, b in zip(widths[:-1], widths[1:])]
    model = MLP(layers + [Dense(widths[-1], 10, activation="softmax")], seed=0, device="cuda")
    model.compile(loss="cross_entropy", optimizer=Adam(1e-3))
    return model


def fastnn_throughput(hidden, batch, x, y, epochs, cuda, nonzero_first=None):
    """samples/s and whether CUDA graphs ran; ``nonzero_first``: the backend's choice of the
    first layer over the nonzero inputs (None: timed on the device by the backend itself)."""
    from fastnn import Callback

    class EpochTimer(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    model = fastnn_model(hidden, x.shape[1])
    model.get_weights()  # builds the backend
    model._backend.nonzero_first = nonzero_first
    model.fit(x, y, epochs=1, batch_size=batch, verbose=0)  # compile, capture the graphs
    timer = EpochTimer()
    timer.seconds = []
    model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0, callbacks=[timer])
    cuda.synchronize()
    graphs = model._backend.runner.uses_graphs
    return x.shape[0] / statistics.median(timer.seconds), graphs


def fastnn_profile(torch, hidden, batch, x, y, cuda, steps=160):
    """Device time per kernel over ``steps`` training steps, from PyTorch's profiler (CUPTI sees
    every kernel of the process, numba's included, and those replayed from graphs)."""
    from torch.profiler import ProfilerActivity, profile
    model = fastnn_model(hidden, x.shape[1])
    xs, ys = x[:batch * steps], y[:batch * steps]
    model.fit(xs, ys, epochs=1, batch_size=batch, verbose=0, shuffle=False)
    cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        model.fit(xs, ys, epochs=1, batch_size=batch, verbose=0, shuffle=False)
        cuda.synchronize()
    events = prof.key_averages()
    for key in ("self_device_time_total", "self_cuda_time_total", "device_time_total", "cuda_time_total"):
        try:
            table = events.table(sort_by=key, row_limit=20, max_name_column_width=70)
            break
        except Exception:
            continue
    print(f"\nfastnn device time per kernel, {steps} steps of batch {batch}, {'-'.join(map(str, hidden))} hidden")
    print(table)


# ---- PyTorch ------------------------------------------------------------------------------

def torch_throughput(torch, hidden, batch, x, y, epochs, graph, device):
    import torch.nn.functional as F
    torch.manual_seed(0)
    widths = (x.shape[1],) + tuple(hidden)
    mods = []
    for a, b in zip(widths[:-1], widths[1:]):
        mods += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net = torch.nn.Sequential(*mods, torch.nn.Linear(widths[-1], 10)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, capturable=graph)
    X = torch.as_tensor(x, device=device)
    Y = torch.as_tensor(y, device=device)
    n = X.shape[0]
    steps = n // batch
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(xb), yb)
        loss.backward()
        opt.step()
        return loss

    if graph:
        static_x = X[:batch].clone()
        static_y = Y[:batch].clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step(static_x, static_y)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(g):
            static_loss = F.cross_entropy(net(static_x), static_y)
            static_loss.backward()
            opt.step()

        def epoch():
            perm = torch.randperm(n, device=device)
            for i in range(steps):
                idx = perm[i * batch:(i + 1) * batch]
                torch.index_select(X, 0, idx, out=static_x)
                torch.index_select(Y, 0, idx, out=static_y)
                g.replay()
    else:
        def epoch():
            perm = torch.randperm(n, device=device)
            for i in range(steps):
                idx = perm[i * batch:(i + 1) * batch]
                step(X.index_select(0, idx), Y.index_select(0, idx))

    epoch()  # warm-up: allocator, cuBLAS handles, kernels
    sync()
    seconds = []
    for _ in range(epochs):
        t = time.perf_counter()
        epoch()
        sync()
        seconds.append(time.perf_counter() - t)
    return steps * batch / statistics.median(seconds)


# ---- SGEMM --------------------------------------------------------------------------------

def fastnn_sgemm_tflops(cuda, m, n, k, repeats, tile=None, trans_a=False, trans_b=False):
    """fastnn's SGEMM on C (m, n) = op(A) @ op(B), TFLOP/s: the median of ``repeats`` calls,
    each timed from the host with the device synchronized, after a check of C's first row."""
    from fastnn.cuda.dense import sgemm
    rng = np.random.default_rng(0)
    a_host = rng.standard_normal(m * k, dtype=np.float32)
    b_host = rng.standard_normal(k * n, dtype=np.float32)
    a, b = cuda.to_device(a_host), cuda.to_device(b_host)
    c = cuda.device_array(m * n, np.float32)
    sgemm(c, a, b, m, n, k, trans_a, trans_b, tile=tile)  # compile
    cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sgemm(c, a, b, m, n, k, trans_a, trans_b, tile=tile)
        cuda.synchronize()
        times.append(time.perf_counter() - t)
    # A fast wrong kernel is no result: check the first row of C.
    a_row = a_host.reshape(k, m)[:, 0] if trans_a else a_host[:k]
    b_mat = b_host.reshape(n, k).T if trans_b else b_host.reshape(k, n)
    ref = a_row.astype(np.float64) @ b_mat.astype(np.float64)
    np.testing.assert_allclose(c.copy_to_host()[:n], ref, rtol=1e-3, atol=1e-2)
    return 2.0 * m * n * k / statistics.median(times) / 1e12


def cublas_sgemm_tflops(torch, m, n, k, repeats, device):
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    c = torch.matmul(a, b)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b, out=c)
        sync()
        times.append(time.perf_counter() - t)
    return 2.0 * m * n * k / statistics.median(times) / 1e12


def gemm_shapes(n_in, hidden, batch):
    """(M, N, K) of the training step's GEMMs: forward, dW (with the bias row), dx."""
    widths = (n_in,) + tuple(hidden) + (10,)
    shapes = []
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        shapes += [(batch, b, a), (a + 1, b, batch)] + ([(batch, a, b)] if k else [])
    return shapes


# ---- main ---------------------------------------------------------------------------------

def main():
    args = parse_args()
    cuda = require_gpu(args.smoke)
    torch, torch_why = import_torch(args.smoke, not args.no_torch)
    device = "cpu" if args.smoke else "cuda"
    x, y, source = load_data(args.smoke)
    configs = [CONFIGS[int(i)] for i in args.configs.split(",")]
    if args.smoke:
        configs = [((6, 5), 8)]
        args.epochs, args.repeats = 1, 1
    print("command: python " + " ".join(["benchmarks/gpu.py"] + sys.argv[1:]))
    print(describe(cuda, torch))
    print(f"data: {source}, {x.shape[0]} rows; {args.epochs} timed epochs after one warm-up, median")
    if torch is None:
        print(f"PyTorch columns skipped: {torch_why}")
    print()
    header = f"{'network':<18}{'batch':>6}{'fastnn':>12}{'gemm 1st':>10}{'nz 1st':>10}{'torch eager':>13}" \
             f"{'torch graph':>13}{'vs eager':>10}{'vs graph':>10}"
    if args.tile_candidates:
        return compare_tiles(cuda, [tuple(map(int, t.split(","))) for t in args.tile_candidates.split(";")],
                             args.repeats, 16 if args.smoke else None)
    results = {"command": " ".join(["benchmarks/gpu.py"] + sys.argv[1:]), "environment": describe(cuda, torch),
               "data": source, "training": [], "sgemm": None, "tiles": []}
    print("training samples/s (float32, Adam)")
    print(header)
    fmt = lambda v: f"{v:,.0f}" if v else "-"  # noqa: E731
    for hidden, batch in configs:
        name = "-".join(map(str, (x.shape[1],) + hidden + (10,)))
        got = attempt(f"fastnn {name} batch {batch}", fastnn_throughput, hidden, batch, x, y, args.epochs, cuda)
        ours, graphs = got if got else (None, False)
        # The first layer forced each way: the backend's own timing chose one of them for "fastnn".
        forced = [attempt(f"fastnn {name} batch {batch}, first layer {way}", fastnn_throughput, hidden, batch, x, y,
                          args.epochs, cuda, way == "nonzero") for way in ("gemm", "nonzero")]
        forced = [f[0] if f else None for f in forced]
        eager = graph = None
        if torch is not None:
            eager = attempt(f"torch eager {name}", torch_throughput, torch, hidden, batch, x, y, args.epochs, False,
                            device)
            if device == "cuda":
                graph = attempt(f"torch graph {name}", torch_throughput, torch, hidden, batch, x, y, args.epochs,
                                True, device)
        ratio = lambda v: f"{ours / v:.2f}x" if v and ours else "-"  # noqa: E731
        print(f"{name:<18}{batch:>6}{fmt(ours):>12}{fmt(forced[0]):>10}{fmt(forced[1]):>10}{fmt(eager):>13}"
              f"{fmt(graph):>13}{ratio(eager):>10}"
              f"{ratio(graph):>10}" + ("" if graphs or not ours else "   (fastnn without CUDA graphs)"), flush=True)
        if args.profile and torch is not None and device == "cuda":
            attempt(f"profile {name}", fastnn_profile, torch, hidden, batch, x, y, cuda)
        results["training"].append({"network": name, "batch": batch, "fastnn": ours, "fastnn_graphs": graphs,
                                    "fastnn_gemm_first": forced[0], "fastnn_nonzero_first": forced[1],
                                    "torch_eager": eager, "torch_graph": graph,
                                    "config": CONFIGS.index((hidden, batch)) if (hidden, batch) in CONFIGS else None})
    if not args.no_sgemm:
        size = 16 if args.smoke else SGEMM_SIZE
        print(f"\nSGEMM {size}^3 float32, TFLOP/s (TF32 off)")
        ours = attempt("fastnn sgemm", fastnn_sgemm_tflops, cuda, size, size, size, args.repeats)
        theirs = None
        line = f"fastnn {ours:.3g}" if ours else "fastnn -"
        if torch is not None:
            theirs = attempt("cuBLAS sgemm", cublas_sgemm_tflops, torch, size, size, size, args.repeats, device)
            if ours and theirs:
                line += f"   cuBLAS (torch.matmul) {theirs:.3g}   fastnn / cuBLAS {ours / theirs:.0%}"
        print(line, flush=True)
        results["sgemm"] = {"size": size, "fastnn_tflops": ours, "cublas_tflops": theirs}
    if args.tiles:
        from fastnn.cuda import TILES
        from fastnn.cuda.dense import choose_tile
        print("\nSGEMM TFLOP/s per tile (BM, BN, BK, TM, TN) on the configs' shapes; * = choose_tile's pick")
        shapes = sorted({s for hidden, batch in configs for s in gemm_shapes(x.shape[1], hidden, batch)})
        print(f"{'M x N x K':<22}" + "".join(f"{str(t[:2]):>14}" for t in TILES))
        for m, n, k in shapes:
            cells = []
            for t in TILES:
                v = attempt(f"sgemm tile {t}", fastnn_sgemm_tflops, cuda, m, n, k, args.repeats, t)
                cells.append((f"{v:.3g}" if v else "-") + ("*" if t == choose_tile(m, n) else " "))
                results["tiles"].append({"m": m, "n": n, "k": k, "tile": list(t), "tflops": v,
                                         "chosen": t == choose_tile(m, n)})
            print(f"{f'{m} x {n} x {k}':<22}" + "".join(f"{c:>14}" for c in cells), flush=True)
    print_goals(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def compare_tiles(cuda, tiles, repeats, size=None):
    """TFLOP/s of each candidate tile on the large GEMMs of training (forward NN, dW TN, dx NT)."""
    shapes = [(4096, 4096, 4096, 0, 0), (4096, 4096, 4096, 1, 0), (4096, 4096, 4096, 0, 1),
              (256, 1024, 1024, 0, 0), (1025, 1024, 256, 1, 0), (256, 1024, 1024, 0, 1)]
    if size:
        shapes = [(size, size, size, ta, tb) for _, _, _, ta, tb in shapes[:3]]
    print(f"{'M x N x K layout':<24}" + "".join(f"{str(t):>22}" for t in tiles))
    for m, n, k, ta, tb in shapes:
        cells = []
        for t in tiles:
            v = attempt(f"sgemm {t}", fastnn_sgemm_tflops, cuda, m, n, k, repeats, t, bool(ta), bool(tb))
            cells.append(f"{v:.3g}" if v else "-")
        layout = "TN" if ta else ("NT" if tb else "NN")
        print(f"{f'{m} x {n} x {k} {layout}':<24}" + "".join(f"{c:>22}" for c in cells), flush=True)


def print_goals(results):
    """PASS/FAIL per goal, from what this run measured (FAIL with a reason where it measured nothing)."""
    print("\ngoals")
    by_config = {r["config"]: r for r in results["training"]}
    for index, least in GOALS:
        hidden, batch = CONFIGS[index]
        name = f"{'-'.join(map(str, (784,) + hidden + (10,)))} batch {batch} >= {least:g}x PyTorch CUDA graph"
        r = by_config.get(index)
        if r is None or not r["fastnn"] or not r["torch_graph"]:
            print(f"  {name}: not measured")
            continue
        got = r["fastnn"] / r["torch_graph"]
        print(f"  {name}: {got:.2f}x  {'PASS' if got >= least else 'FAIL'}")
    g = results["sgemm"]
    name = f"SGEMM {SGEMM_SIZE}^3 >= {SGEMM_GOAL:.0%} of cuBLAS"
    if not g or not g["fastnn_tflops"] or not g["cublas_tflops"]:
        print(f"  {name}: not measured")
    else:
        got = g["fastnn_tflops"] / g["cublas_tflops"]
        print(f"  {name}: {got:.0%}  {'PASS' if got >= SGEMM_GOAL else 'FAIL'}")


if __name__ == "__main__":
    main()
