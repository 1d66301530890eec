"""Where the time of one training step goes: gather, forward, loss, backward, optimizer.

    python benchmarks/profile_step.py [--threads N] [--batch B] [--sizes 784,100,50,10] [--repeats R]

Runs the stages of ``fastnn.kernels.network.train_batches`` over one shuffled MNIST epoch
(``$FASTNN_DATA``, else the bundled 8x8 digits) inside one compiled loop, first the gather
alone, then gather + forward, and so on up to the whole step, so no Python runs between
batches; a stage's cost is the difference between consecutive totals. Medians of
``--repeats`` epochs, with BLAS threads chosen as ``fit`` chooses them. ReLU hidden layers,
softmax + cross-entropy, Adam(1e-3), float32: the configuration of ``benchmarks/peers.py``.
"""
import argparse
import time

import numpy as np

from fastnn.config import kernel
from fastnn.kernels import network as net
from fastnn.kernels.losses import loss_forward

STAGES = ("gather", "forward", "loss", "backward", "optimizer")


@kernel
def run_stages(stage, network, train, work, loss, x, y, order, batch_size, n_batches):
    """train_batches' loop, stopping each batch after ``stage`` (an index into STAGES)."""
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
                total += loss_forward(loss, pred, yb)
        if stage >= 3:
            net.network_backward(network, train.grads, xb, work, loss, yb)
        if stage >= 4:
            net.apply_optimizers(network.params, train, None, None)
    return total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--sizes", default="784,100,50,10", help="layer widths, input first")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import fastnn
    from fastnn.threading import blas_threads_for

    fastnn.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    try:
        x, labels, _, _ = fastnn.load_mnist()
    except (FileNotFoundError, RuntimeError):
        x, labels = fastnn.load_digits()
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

    def call(stage):
        train = net.Training(backend.grads, backend.state1, backend.state2, backend.opt_meta, model._opt_hyper(),
                             backend.opt_steps)
        return run_stages(stage, backend._network(), train, backend.work, model.loss.code, x, y, order, args.batch,
                          n_batches)

    per_batch = {name: [] for name in STAGES}
    with blas_threads_for(3 * backend.flops_per_row * args.batch):
        call(len(STAGES) - 1)  # compiles, and warms every buffer
        for _ in range(args.repeats):
            for stage, name in enumerate(STAGES):
                start = time.perf_counter()
                call(stage)
                per_batch[name].append((time.perf_counter() - start) / n_batches * 1e6)
    print(f"{'-'.join(map(str, sizes))}, batch {args.batch}, {args.threads} thread(s), "
          f"medians of {args.repeats} epochs of {n_batches} batches")
    previous = 0.0
    for name in STAGES:
        cumulative = float(np.median(per_batch[name]))
        print(f"  {name:<10} {cumulative - previous:9.1f} us   (cumulative {cumulative:9.1f} us)")
        previous = cumulative
    print(f"  step       {previous:9.1f} us = {args.batch / previous * 1e6:,.0f} samples/s")


if __name__ == "__main__":
    main()
