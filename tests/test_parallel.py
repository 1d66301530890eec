"""The parallel passes (``fastnn/kernels/parallel.py``): each parallel kernel gives its serial
kernel's result bit for bit (every block computes its outputs as the serial loop does) and a NumPy
reference's, writes through views of a flat buffer in place and nothing outside them; and a whole
training run gives the same parameters in a serial and a parallel build."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastnn import config
from fastnn.kernels import activations as A
from fastnn.kernels import optimizers as O
from fastnn.kernels import parallel as P

# Sizes above every threshold, so that the parallel kernels split the work (rows x columns).
ROWS, COLS = 96, 400
assert ROWS * COLS >= max(config.PARALLEL_MIN_ACTIVATION, config.PARALLEL_MIN_COLUMN_SUMS, config.PARALLEL_MIN_GATHER)


def rng_matrix(seed, rows=ROWS, cols=COLS):
    return np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)


@pytest.mark.parametrize("relu, with_bias, in_place", [(True, True, True), (True, False, False), (False, True, False)])
def test_bias_relu_parallel(relu, with_bias, in_place):
    x = rng_matrix(0)
    b = rng_matrix(1, 1, COLS)[0] if with_bias else np.zeros(0, np.float32)
    expected = x + b if with_bias else x.copy()
    if relu:
        expected = np.maximum(expected, np.float32(0))
    buffer = np.full(ROWS * COLS + 8, 7, np.float32)  # a view of a flat buffer, as the workspace's
    out = buffer[4: 4 + ROWS * COLS].reshape(ROWS, COLS)
    if in_place:
        out[:] = x
    A.bias_relu_parallel(out, out if in_place else x, b, relu)
    np.testing.assert_array_equal(out, expected)
    assert (buffer[:4] == 7).all() and (buffer[-4:] == 7).all()
    serial = np.empty_like(x)
    for i in range(ROWS):  # the serial kernel, a row at a time (below its threshold)
        A.bias_activation_forward(serial[i:i + 1], x[i:i + 1], b, A.RELU if relu else A.IDENTITY, 0.0)
    np.testing.assert_array_equal(out, serial)


def test_relu_backward_parallel():
    dout, out = rng_matrix(2), np.maximum(rng_matrix(3), np.float32(0))
    expected = np.where(out > 0, dout, np.float32(0))
    A.relu_backward_parallel(dout, dout, out)  # in place, as the layers call it
    np.testing.assert_array_equal(dout, expected)


@pytest.mark.parametrize("cols", [COLS, 37])  # 37: fewer columns than two aligned blocks
def test_column_sums_parallel(cols):
    dz = rng_matrix(4, ROWS * COLS // cols, cols)
    db = np.full(cols, np.nan, np.float32)
    P.column_sums_parallel(db, dz)
    # The serial order (row after row), as cumsum adds in float32.
    np.testing.assert_array_equal(db, np.cumsum(dz, axis=0, dtype=np.float32)[-1])
    np.testing.assert_allclose(db, dz.astype(np.float64).sum(axis=0), rtol=1e-4, atol=1e-4)


def test_gather_rows_parallel():
    src = rng_matrix(5, 300)
    order = np.random.default_rng(6).permutation(300).astype(np.int64)
    dst = np.empty((ROWS, COLS), np.float32)
    P.gather_rows_parallel(dst, src, order, 17)
    np.testing.assert_array_equal(dst, src[order[17: 17 + ROWS]])


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_gather_rows_takes_the_rows_of_any_layout(layout):
    """The serial gather, which asks for a C-contiguous source's lines before copying them
    (``copy_rows``), and copies any other layout without."""
    src = rng_matrix(5, 300, 2 * COLS)
    src = {"C": src[:, :COLS].copy(), "F": np.asfortranarray(src[:, :COLS]), "strided": src[:, ::2]}[layout]
    order = np.random.default_rng(6).permutation(300).astype(np.int64)
    dst = np.empty((ROWS, COLS), np.float32)
    P.gather_rows(dst, src, order, 17)
    np.testing.assert_array_equal(dst, src[order[17: 17 + ROWS]])


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_step_parallel_equals_adam_step_on_views(weight_decay):
    n = config.PARALLEL_MIN_ELEMENTS + 1001  # not a multiple of the blocks' alignment
    rng = np.random.default_rng(7)
    flat = [rng.standard_normal(n + 64).astype(np.float32) for _ in range(4)]
    flat[3] = np.abs(flat[3])  # v >= 0
    flat[1][100:200] = 0  # zero gradients: the denormal guard's branch
    serial = [a.copy() for a in flat]
    before = flat[0].copy()
    lo, hi = 32, 32 + n
    O.adam_step_parallel(*(a[lo:hi] for a in flat), 1e-3, 0.9, 0.999, 1e-7, 3, weight_decay)
    O.adam_step(*(a[lo:hi] for a in serial), 1e-3, 0.9, 0.999, 1e-7, 3, weight_decay)
    for got, want in zip(flat, serial):
        np.testing.assert_array_equal(got, want)  # inside the views, and untouched outside
    assert not np.array_equal(flat[0][lo:hi], before[lo:hi]) and np.array_equal(flat[0][:lo], before[:lo])


def test_adam_parallel_against_numpy():
    n = config.PARALLEL_MIN_ELEMENTS * 2
    rng = np.random.default_rng(8)
    p, g, m = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    v = np.abs(rng.standard_normal(n)).astype(np.float32)
    p64, g64, m64, v64 = (a.astype(np.float64) for a in (p, g, m, v))
    step, lr, b1, b2, eps = 4, 1e-2, 0.9, 0.999, 1e-7
    O.adam_step_parallel(p, g, m, v, lr, b1, b2, eps, step, 0.0)
    m64 = b1 * m64 + (1 - b1) * g64
    v64 = b2 * v64 + (1 - b2) * g64 * g64
    p64 -= lr / (1 - b1 ** step) * m64 / (np.sqrt(v64) / np.sqrt(1 - b2 ** step) + eps)
    np.testing.assert_allclose(m, m64, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v, v64, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p, p64, rtol=1e-5, atol=1e-5)


FIT = textwrap.dedent("""
    import json, multiprocessing, os, numpy as np, fastnn
    from fastnn import config
    rng = np.random.default_rng(0)
    x = rng.random((512, 784), dtype=np.float32)
    y = rng.integers(0, 10, 512)
    hidden, batch = int(os.environ.get("HIDDEN", "128")), int(os.environ.get("BATCH", "256"))
    model = fastnn.MLP([fastnn.Dense(784, hidden, activation="relu"), fastnn.Dense(hidden, 10, activation="softmax")],
                       seed=0)
    model.compile(loss="cross_entropy", optimizer=fastnn.Adam(1e-3))
    model.fit(x, y, epochs=2, batch_size=batch, verbose=0)
    with multiprocessing.get_context("fork").Pool(2) as pool:  # still works after the parallel passes
        squares = pool.map_async(abs, [-1, -2]).get(timeout=60)
    print(json.dumps({"passes": [config.PARALLEL_OPTIMIZER, config.PARALLEL_ACTIVATIONS, config.PARALLEL_COLUMN_SUMS,
                                 config.PARALLEL_GATHER], "pool": squares,
                      "adam": config.parallel_optimizer(model._backend.params.size,  # as the step chose
                                                        model._backend._step_flops(None, batch)),
                      "params": [float(v) for v in model.get_weights()[0].ravel()[::997]]
                                + [float(v) for w in model.get_weights()[1:] for v in w.ravel()]}))
""")


@pytest.mark.slow
@pytest.mark.skipif(not config.PARALLEL or sys.platform != "linux", reason="needs Numba's TBB layer and fork")
def test_serial_and_parallel_builds_train_the_same_parameters():
    """784-128-10 at batch 256 (every pass above its threshold), with every parallel pass and with
    none: the same parameters, bit for bit (the products are the same BLAS calls; every parallel
    pass computes each output as its serial loop), and a fork pool works after the parallel run."""
    results = {}
    for passes in ("all", "0"):
        env = dict(os.environ, FASTNN_PARALLEL=passes)
        done = subprocess.run([sys.executable, "-c", FIT], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        results[passes] = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["all"]["passes"] == [True] * 4 and results["0"]["passes"] == [False] * 4
    assert results["all"]["pool"] == [1, 2]
    assert results["all"]["params"] == results["0"]["params"]


@pytest.mark.slow
@pytest.mark.skipif(not config.PARALLEL or sys.platform != "linux", reason="needs Numba's TBB layer and fork")
def test_a_large_model_runs_adams_parallel_pass_by_default_with_the_serial_result():
    """Without FASTNN_PARALLEL, a model of PARALLEL_OPTIMIZER_MIN_PARAMS parameters or more (784-340-10:
    270,660) whose products run BLAS on one thread (batch 16) runs Adam's parallel pass: the same
    parameters as a serial build, bit for bit, and a fork pool works after it."""
    results = {}
    for passes in ("", "0"):
        env = {k: v for k, v in os.environ.items() if k != "FASTNN_PARALLEL"}
        env.update(HIDDEN="340", BATCH="16", **({"FASTNN_PARALLEL": passes} if passes else {}))
        done = subprocess.run([sys.executable, "-c", FIT], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        results[passes] = json.loads(done.stdout.strip().splitlines()[-1])
    assert 784 * 340 + 340 + 3410 + 10 >= config.PARALLEL_OPTIMIZER_MIN_PARAMS
    assert results[""]["adam"] is True and results["0"]["adam"] is False
    assert results[""]["pool"] == [1, 2]
    assert results[""]["params"] == results["0"]["params"]


def test_parallel_optimizer_choice(monkeypatch):
    """FASTNN_PARALLEL's choice holds for every model; without one, the model's size and whether its
    products run BLAS on one thread decide; a serial build never runs it."""
    small, large = config.BLAS_PARALLEL_MIN_FLOPS - 1, config.BLAS_PARALLEL_MIN_FLOPS  # a step's FLOPs
    for chosen, optimizer, parallel, size, flops, expected in [
            (False, False, True, config.PARALLEL_OPTIMIZER_MIN_PARAMS, small, True),
            (False, False, True, config.PARALLEL_OPTIMIZER_MIN_PARAMS, large, False),  # BLAS on two threads
            (False, False, True, config.PARALLEL_OPTIMIZER_MIN_PARAMS - 1, small, False),
            (True, True, True, 10, large, True),
            (True, False, True, 10**9, small, False),  # other passes named: Adam stays serial
            (False, False, False, 10**9, small, False)]:
        monkeypatch.setattr(config, "PARALLEL_PASSES_CHOSEN", chosen)
        monkeypatch.setattr(config, "PARALLEL_OPTIMIZER", optimizer)
        monkeypatch.setattr(config, "PARALLEL", parallel)
        assert config.parallel_optimizer(size, flops) is expected, (chosen, optimizer, parallel, size, flops)


WARM = textwrap.dedent("""
    import numpy as np
    from fastnn.kernels import activations as A, optimizers as O, parallel as P
    x = np.ones((96, 400), np.float32)
    A.bias_relu_parallel(x, x, np.zeros(0, np.float32), True)
    A.relu_backward_parallel(x, x, x)
    P.column_sums_parallel(np.empty(400, np.float32), x)
    P.gather_rows_parallel(x, x.copy(), np.arange(96, dtype=np.int64), 0)
    f = np.ones(20000, np.float32)
    O.adam_step_parallel(f, f.copy(), f.copy(), f.copy(), 1e-3, 0.9, 0.999, 1e-7, 1, 0.0)
    print("ran")
""")


def test_every_parallel_kernel_runs_when_loaded_from_a_warm_cache(tmp_path):
    """The build of each parallel kernel (the test suite's: parallel where TBB loads) runs when a new process
    loads it from the cache, not only when compiled: Numba's thread-count intrinsic starts the
    threading layer when compiled only, and the second process called a null pointer."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    for run in ("compiles", "loads"):
        done = subprocess.run([sys.executable, "-c", WARM], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.strip() == "ran", (run, done.returncode, done.stderr[-2000:])


CALLER = textwrap.dedent("""
    import sys, numpy as np
    from fastnn import config
    from fastnn.kernels import optimizers as O
    n = 2 * config.PARALLEL_MIN_ELEMENTS
    p, g, m, v = (np.full(n, x, np.float32) for x in (1.0, 0.5, 0.0, 0.0))
    if sys.argv[1] == "callee":
        O.adam_step_parallel(p, g, m, v, 1e-3, 0.9, 0.999, 1e-7, 1, 0.0)
    else:
        hyper = np.zeros(O.N_HYPER)
        hyper[[O.H_LR, O.H_1, O.H_2, O.H_EPS]] = 1e-3, 0.9, 0.999, 1e-7
        O.optimizer_step(O.ADAM, p, g, m, v, hyper, 1, True)
    print(config.PARALLEL_OPTIMIZER, float(p[0]), float(p[-1]))
""")


@pytest.mark.skipif(sys.platform != "linux", reason="the crash was seen on Linux only")
def test_a_caller_compiled_against_a_cached_parallel_kernel_starts_the_threads_when_loaded(tmp_path):
    """Three processes on one cache: the first compiles Adam's parallel kernel alone; the second
    loads it and compiles a caller (``optimizer_step``); the third loads that caller alone. Numba
    does not put a loaded kernel's thread start-up (``reload_init``) back on its library, so the
    caller was saved without it and the third process crashed (SIGSEGV) in the parallel loop
    (``config._CacheOnFirstUse.load_overload``)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "FASTNN_PARALLEL": "optimizer"}
    outputs = []
    for role in ("callee", "caller compiles", "caller loads"):
        done = subprocess.run([sys.executable, "-c", CALLER, role.split()[0]], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, (role, done.returncode, done.stderr[-2000:])
        outputs.append(done.stdout.split())
    if outputs[0][0] != "True":
        pytest.skip("Numba's TBB layer is not available here")
    # Adam's first step moves each parameter by lr (g / (|g| + eps)), the same in each process.
    assert outputs[1] == outputs[2] == outputs[0], outputs
    assert abs(float(outputs[0][1]) - 0.999) < 1e-6 and outputs[0][1] == outputs[0][2], outputs
