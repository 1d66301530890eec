"""Where the time of one training step goes: gather, forward, loss, backward, optimizer.

    python benchmarks/profile_step.py [--threads N] [--batch B] [--sizes 784,100,50,10] [--repeats R] [--json]

Runs the stages of ``fastnn.kernels.network.train_batches`` over one shuffled MNIST epoch
(``$FASTNN_DATA``, else the bundled 8x8 digits) inside one compiled loop, first the gather
alone, then gather + forward, and so on up to the whole step, so no Python runs between
batches; a stage's cost is the difference between consecutive totals. Medians of
``--repeats`` epochs, with BLAS threads chosen as ``fit`` chooses them. ReLU hidden layers,
softmax + cross-entropy, Adam(1e-3), float32: the configuration of ``benchmarks/peers.py``.
"products" is the matrix products of a step alone (the same ``np.dot`` calls on the same shapes,
in one compiled loop), the part of the step that BLAS's threads run; ``benchmarks/scaling.py``
runs this at each thread count (``--json``).
"""
import argparse
import os
import sys
import time

import json

import numpy as np
from numba.typed import List

from fastnn import config
from fastnn.config import kernel
from fastnn.kernels import network as net

STAGES = ("gather", "forward", "loss", "backward", "optimizer")


@kernel
def run_stages(stage, network, train, work, loss, loss_fns, x, y, order, batch_size, n_batches, parallel=None):
    """train_batches' loop, stopping each batch after ``stage`` (an index into STAGES); ``parallel``:
    train_batches' ``parallel_optimizer``."""
    acts, act_off, targets = work.acts, work.act_off, work.targets
    n_in, n_out = x.shape[1], y.shape[1]
    total = 0.0
    for bi in range(n_batches):
        lo = bi * batch_size
        xb = acts[act_off[0]: act_off[0] + batch_size * n_in].reshape(batch_size, n_in)
        yb = targets[: batch_size * n_out].reshape(batch_size, n_out)
        net.gather_rows(xb, x, order, lo)
        net.gather_rows(yb, y, order, lo)
        if stage >= 1:
            pred = net.network_forward(network, xb, work, True)
            if stage >= 2:
                total += loss_fns.value[0](pred, yb)
        if stage >= 3:
            net.network_backward(network, train.grads, xb, work, loss, yb, loss_fns=loss_fns)
        if stage >= 4:
            net.apply_optimizers(network.params, train, None, None, parallel)
    return total


@kernel
def run_products(products, weights, acts, deltas, grads, n_batches, gemm=None):
    """The matrix products of ``n_batches`` steps: forward x @ W, backward x.T @ dz and dz @ W.T
    (none for the first layer's input), as the dense layers call them: through the library the
    step's ``gemm`` gives each (``fastnn.blas.plan``: MKL, or MKL tiles on Numba's threads), by
    ``products`` (``step_limit._products_kernel``)."""
    bits = getattr(gemm, "bits", gemm)
    bits = np.zeros(len(weights), np.int64) if bits is None else bits
    tiles = getattr(gemm, "tiles", None)
    for _ in range(n_batches):
        products(weights, acts, deltas, grads, bits, tiles)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--sizes", default="784,100,50,10", help="layer widths, input first")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=0, help="train on the first ROWS rows only (0: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = parser.parse_args(argv)

    import fastnn
    from fastnn import blas
    from fastnn.threading import blas_threads_for
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from step_limit import _products_kernel  # (benchmarks/, this script's folder)
    from fastnn.user_losses import loss_kernels

    fastnn.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    try:
        x, labels, _, _ = fastnn.load_mnist()
    except (FileNotFoundError, RuntimeError):
        x, labels = fastnn.load_digits()
    if args.rows:
        x, labels = x[: args.rows], labels[: args.rows]
    if x.shape[1] != sizes[0]:
        parser.error(f"the data has {x.shape[1]} features; --sizes must start with it")
    layers = [fastnn.Dense(a, b, activation="relu") for a, b in zip(sizes[:-2], sizes[1:-1])]
    layers.append(fastnn.Dense(sizes[-2], sizes[-1], activation="softmax"))
    model = fastnn.MLP(layers, seed=0)
    model.compile(loss="cross_entropy", optimizer=fastnn.Adam(1e-3))
    model.train_on_batch(x[: args.batch], labels[: args.batch])  # builds the backend's buffers
    backend = model._backend
    y = np.eye(sizes[-1], dtype=np.float32)[labels % sizes[-1]]
    order = np.random.default_rng(0).permutation(x.shape[0]).astype(np.int64)
    n_batches = x.shape[0] // args.batch
    fns = loss_kernels(int(model.loss.code), np.float32)
    with blas_threads_for(3 * backend.flops_per_row * args.batch, True):
        gemm = backend._network(args.batch, True).gemm  # (the products' library, as fit's step)
    parallel = backend._parallel_optimizer(None, args.batch, blas.tiled(gemm))  # as fit chooses (a dense first layer)

    def call(stage):
        train = net.Training(backend.grads, backend.state1, backend.state2, backend.opt_meta, model._opt_hyper(),
                             backend.opt_steps)
        return run_stages(stage, backend._network(args.batch, True), train, backend.work, model.loss.code, fns, x, y,
                          order, args.batch, n_batches, parallel)

    rng = np.random.default_rng(1)
    weights, acts, deltas, grads = List(), List(), List(), List()
    for k, width in enumerate(sizes):
        acts.append(rng.random((args.batch, width), dtype=np.float32))
        deltas.append(rng.random((args.batch, width), dtype=np.float32))
        if k:
            weights.append(rng.random((sizes[k - 1], width), dtype=np.float32))
            grads.append(np.empty((sizes[k - 1], width), np.float32))

    per_batch = {name: [] for name in STAGES + ("products",)}
    with blas_threads_for(3 * backend.flops_per_row * args.batch, True):
        call(len(STAGES) - 1)  # compiles, and warms every buffer
        products = _products_kernel()
        run_products(products, weights, acts, deltas, grads, 1, gemm)
        for _ in range(args.repeats):
            for stage, name in enumerate(STAGES):
                start = time.perf_counter()
                call(stage)
                per_batch[name].append((time.perf_counter() - start) / n_batches * 1e6)
            start = time.perf_counter()
            run_products(products, weights, acts, deltas, grads, n_batches, gemm)
            per_batch["products"].append((time.perf_counter() - start) / n_batches * 1e6)
    medians = {name: float(np.median(times)) for name, times in per_batch.items()}
    if args.json:
        stages, previous = {}, 0.0
        for name in STAGES:
            stages[name], previous = medians[name] - previous, medians[name]
        print(json.dumps({"sizes": sizes, "batch": args.batch, "threads": args.threads, "stages_us": stages,
                          "step_us": previous, "products_us": medians["products"],
                          "kernels": config.PARALLEL_REASON, "parallel_passes": [
                              p for p in config.PARALLEL_PASSES if getattr(config, "PARALLEL_" + p.upper())
                              or p == "optimizer" and parallel is not None]}))
        return
    print(f"{'-'.join(map(str, sizes))}, batch {args.batch}, {args.threads} thread(s), "
          f"medians of {args.repeats} epochs of {n_batches} batches")
    previous = 0.0
    for name in STAGES:
        cumulative = float(np.median(per_batch[name]))
        print(f"  {name:<10} {cumulative - previous:9.1f} us   (cumulative {cumulative:9.1f} us)")
        previous = cumulative
    print(f"  step       {previous:9.1f} us = {args.batch / previous * 1e6:,.0f} samples/s")
    print(f"  products   {medians['products']:9.1f} us alone; the rest {previous - medians['products']:9.1f} us")


if __name__ == "__main__":
    main()
