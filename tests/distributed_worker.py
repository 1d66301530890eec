"""Run by tests/test_distributed.py under ``mpirun -n 2`` (and imported by it to train the same
models in one process): small trainings whose weights and logs the test compares.

Usage: python tests/distributed_worker.py OUT_DIR [fail | disagree [NAME]]
Writes OUT_DIR/rank<r>.npz: for each scenario, the weights after training and the History.
With "fail", rank 1 raises inside fit (the test checks that the whole job ends). With
"disagree", the ranks pass different arguments or data, or stop apart (DISAGREEMENTS, or only
NAME of them): OUT_DIR/disagree<r>.json holds what each rank saw.
"""
import json
import sys

import numpy as np

import fastnn

# (name, dtype): the trainings compared with one process
SCENARIOS = [("classify", "float64"), ("classify", "float32"), ("summed", "float64"), ("batchnorm", "float32"),
             ("functional", "float64"), ("sparse", "float64")]


def data(rows=203, features=6, classes=3, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    return x, y, rng.normal(size=(rows, 2))


def build(name, dtype):
    """The model of a scenario, compiled; every rank builds it with its own seed (rank 0's wins)."""
    seed = 7 + fastnn.distributed.rank()  # different on purpose: fit starts from rank 0's state
    if name in ("classify", "sparse"):  # sparse: the classifier on a CSR input, its zeros skipped
        model = fastnn.MLP([fastnn.Dense(6, 16, activation="relu", kernel_regularizer=fastnn.L2(1e-3)),
                            fastnn.Dropout(0.25), fastnn.Dense(16, 3, activation="softmax")], seed=seed, dtype=dtype)
        schedule = fastnn.ExponentialDecay(0.01, decay_steps=5, decay_rate=0.9)
        return model.compile("cross_entropy", fastnn.Adam(schedule, clipnorm=1.0), metrics=["accuracy", "auc"])
    if name == "summed":  # SSE sums over rows: the ranks' gradients are not scaled by their share
        model = fastnn.MLP([fastnn.Dense(6, 8, activation="tanh"), fastnn.Dense(8, 2)], seed=seed, dtype=dtype)
        return model.compile("sse", fastnn.SGD(1e-3, momentum=0.9), metrics=["mae"])
    if name == "functional":  # two inputs and a merge: the graph's backward under MPI
        a, b = fastnn.Input((4,)), fastnn.Input((2,))
        h = fastnn.Concatenate()([fastnn.Dense(units=5, activation="relu")(a), fastnn.Dropout(0.2)(b)])
        model = fastnn.Model([a, b], fastnn.Dense(units=3, activation="softmax")(h), seed=seed, dtype=dtype)
        return model.compile("cross_entropy", fastnn.Adam(1e-2), metrics=["accuracy"])
    if name == "batchnorm":
        model = fastnn.MLP([fastnn.Dense(6, 8), fastnn.BatchNormalization(), fastnn.Activation("relu"),
                            fastnn.Dense(8, 3, activation="softmax")], seed=seed, dtype=dtype)
        return model.compile("cross_entropy", fastnn.Adam(1e-2), metrics=["accuracy"])
    raise ValueError(name)


def train(name, dtype, callbacks=None):
    """(weights, History.history, evaluate's dict) after two epochs of a scenario. 203 rows in
    batches of 25: the last batch has 3 rows; 202 rows of training data and validation_split
    would leave batches of 1 row, whose share is empty on one rank (see train_one_row)."""
    x, y, targets = data()
    model = build(name, dtype)
    if name == "summed":
        history = model.fit(x, targets, epochs=2, batch_size=25, verbose=0, callbacks=callbacks)
        return model.get_weights(), history.history, model.evaluate(x, targets, return_dict=True)
    if name == "functional":
        x = [x[:, :4], x[:, 4:]]
        history = model.fit(x, y, epochs=2, batch_size=25, validation_data=([v[:50] for v in x], y[:50]), verbose=0)
        return model.get_weights(), history.history, model.evaluate(x, y, return_dict=True)
    if name == "sparse":  # 7% nonzero: each rank gathers its rows of a batch as CSR
        import scipy.sparse as sp
        x = sp.csr_matrix(np.where(np.abs(x) > 1.8, x, 0.0))
    history = model.fit(x, y, epochs=2, batch_size=25, validation_data=(x[:50], y[:50]), verbose=0,
                        callbacks=callbacks)
    return model.get_weights(), history.history, model.evaluate(x, y, return_dict=True)


def train_one_row(dtype="float64"):
    """Weights after fit on 101 rows in batches of 50: the last batch's single row is all on one
    rank (the other's share is empty); then one train_on_batch of 3 rows."""
    x, y, _ = data(rows=101)
    model = build("classify", dtype)
    model.fit(x, y, epochs=1, batch_size=50, verbose=0)
    model.train_on_batch(x[:3], y[:3])
    return model.get_weights()


class FailOnRankOne(fastnn.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if fastnn.distributed.rank() == 1:
            raise RuntimeError("this rank fails on purpose")


class StopOnRankOne(fastnn.Callback):
    """Stops training after the first epoch on rank 1 only (its own figures, its own clock)."""

    def on_epoch_end(self, epoch, logs=None):
        if fastnn.distributed.rank() == 1:
            self.model.stop_training = True


class BatchesOnRankZero(fastnn.Callback):
    """A per-batch hook on rank 0 only: rank 0 would log each batch (summing the AUC counters
    over the ranks) while the others train the epoch in one call."""

    def __init__(self):
        self.batches = 0

    def on_batch_end(self, batch, logs=None):
        self.batches += 1


def disagree(name):
    """One scenario of the ranks disagreeing: what this rank saw (the error, or the epochs it
    trained, its losses, its weights and evaluate's figures after)."""
    rank = fastnn.distributed.rank()
    x, y, _ = data(rows=4096 if name == "rows" else 203)
    model = build("classify", "float64")
    kwargs, callbacks = {"epochs": 3, "batch_size": 50}, []
    if name == "parameters":  # rank 1's hidden layer is wider: each allreduce of another length
        if rank == 1:
            model = fastnn.MLP([fastnn.Dense(6, 17, activation="relu"), fastnn.Dense(17, 3, activation="softmax")],
                               seed=7, dtype="float64")
            model.compile("cross_entropy", fastnn.Adam(1e-2), metrics=["accuracy", "auc"])
    elif name == "epochs":
        kwargs["epochs"] = 1 + rank
    elif name == "batch_size":
        kwargs["batch_size"] = 50 + rank
    elif name == "rows":  # beyond the rows an evenly spaced sample of 1024 rows would see
        x = x.copy()
        if rank == 1:
            x[1::4] += 1.0
    elif name == "stop":
        callbacks = [StopOnRankOne()]
    elif name == "batch_hook":
        callbacks = [BatchesOnRankZero()] if rank == 0 else []
    elif name == "evaluate":  # each rank's share of the rows follows from its batch_size
        try:
            return {"error": None, "evaluate": model.evaluate(x, y, batch_size=50 + rank, return_dict=True)}
        except ValueError as error:
            return {"error": str(error)}
    else:
        raise ValueError(name)
    try:
        history = model.fit(x, y, verbose=0, callbacks=callbacks, **kwargs)
    except ValueError as error:
        return {"error": str(error)}
    return {"error": None, "epochs": len(history.history["loss"]), "loss": history.history["loss"],
            "weights": [w.tolist() for w in model.get_weights()], "evaluate": model.evaluate(x, y, return_dict=True)}


DISAGREEMENTS = ["epochs", "batch_size", "parameters", "rows", "stop", "batch_hook", "evaluate"]


def main(out_dir, mode, only=None):
    rank, size = fastnn.distributed.init()
    if mode == "fail":
        train("classify", "float64", callbacks=[FailOnRankOne()])
        return
    if mode == "disagree":
        seen = {name: disagree(name) for name in ([only] if only else DISAGREEMENTS)}
        with open(f"{out_dir}/disagree{rank}.json", "w") as f:
            json.dump(seen, f)
        return
    results, logs = {}, {}
    for name, dtype in SCENARIOS:
        weights, history, evaluation = train(name, dtype)
        for i, w in enumerate(weights):
            results[f"{name}-{dtype}-{i}"] = w
        logs[f"{name}-{dtype}"] = {"history": history, "evaluate": evaluation}
    for i, w in enumerate(train_one_row()):
        results[f"one_row-{i}"] = w
    # Only rank 0 prints and writes files; what it saves loads as a normal model.
    x, y, _ = data()
    model = build("classify", "float64")
    model.fit(x, y, epochs=1, batch_size=50, verbose=2, callbacks=[
        fastnn.CSVLogger(f"{out_dir}/log{rank}.csv"), fastnn.ModelCheckpoint(f"{out_dir}/checkpoint{rank}.npz")])
    if rank == 0:
        model.save(f"{out_dir}/model.npz")
    for i, w in enumerate(model.get_weights()):
        results[f"saved-{i}"] = w
    # Each rank passes its own shard: every rank must raise the same ValueError.
    lo, hi = fastnn.distributed.share(x.shape[0])
    try:
        build("classify", "float64").fit(x[lo:hi], y[lo:hi], verbose=0)
        logs["shard_error"] = None
    except ValueError as error:
        logs["shard_error"] = str(error)
    # A bad argument on one rank only: raised on every rank.
    try:
        build("classify", "float64").fit(x, y, epochs=-1 if rank == 1 else 1, verbose=0)
        logs["argument_error"] = None
    except ValueError as error:
        logs["argument_error"] = str(error)
    logs["size"] = size
    np.savez(f"{out_dir}/rank{rank}.npz", **results)
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(logs, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "compare", sys.argv[3] if len(sys.argv) > 3 else None)
