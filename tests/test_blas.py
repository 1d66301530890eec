"""The products' library (``fastnn/blas.py``, ``kernels/dense.py: mkl_gemm``): MKL's GEMM against
NumPy in each layout the layers use, the choice's rules, training with MKL's products against
training with OpenBLAS's, MKL's thread count per call, and fork-based pools after MKL ran on
several threads. The MKL tests skip where the ``mkl`` extra is not installed."""
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import fastnn
from fastnn import blas, config
from fastnn.kernels.dense import (GEMM_FORWARD, GEMM_INPUT, GEMM_WEIGHTS, TiledGemm, gemm_bits, gemm_tiles, mkl_gemm,
                                  mkl_gemm_parallel, repeat_product)
from fastnn.threading import blas_threads_for, call_blas_threads
from helpers import TRAIN, run_python

@pytest.fixture
def rng():
    return np.random.default_rng(0)


needs_mkl = pytest.mark.skipif(not config.MKL, reason=f"no MKL here: {config.BLAS_REASON}")


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mkl_gemm_matches_numpy_in_each_layout(dtype, rng):
    # Ragged sizes, and a view whose rows are further apart than its width (a column slice).
    a = rng.standard_normal((37, 53)).astype(dtype)
    b = rng.standard_normal((53, 29)).astype(dtype)
    dz = rng.standard_normal((37, 29)).astype(dtype)
    wide = rng.standard_normal((37, 70)).astype(dtype)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    cases = [(np.empty((37, 29), dtype), a, b, False, False, a @ b),
             (np.empty((53, 29), dtype), a, dz, True, False, a.T @ dz),
             (np.empty((37, 53), dtype), dz, b, False, True, dz @ b.T),
             (np.empty((37, 29), dtype), wide[:, 9:62], b, False, False, wide[:, 9:62] @ b)]
    for out, x, y, ta, tb, expected in cases:
        out[:] = np.nan
        assert mkl_gemm(out, x, y, ta, tb)
        np.testing.assert_allclose(out, expected, **tol)


@needs_mkl
@pytest.mark.parametrize("tiles", [1, 2, 3, 5])
def test_mkl_gemm_parallel_computes_mkl_gemms_product_as_tiles_in_each_layout(tiles, rng):
    """Tiles of out's columns (70 columns: multiples of 16, the last one short) or, for 10
    columns, of its rows (37 rows; more tiles than rows of a 3-row product); a column slice as
    an operand; every element written once."""
    a = rng.standard_normal((37, 53)).astype(np.float32)
    wide = rng.standard_normal((37, 90)).astype(np.float32)
    cases = []
    for n in (70, 10):
        b = rng.standard_normal((53, n)).astype(np.float32)
        dz = rng.standard_normal((37, n)).astype(np.float32)
        view = wide[:, 11:64]
        cases += [((37, n), a, b, False, False, a @ b), ((53, n), a, dz, True, False, a.T @ dz),
                  ((37, 53), dz, b, False, True, dz @ b.T), ((37, n), view, b, False, False, view @ b),
                  ((3, n), a[:3], b, False, False, a[:3] @ b)]
    for shape, x, y, ta, tb, expected in cases:
        out = np.full(shape, np.nan, np.float32)
        assert mkl_gemm_parallel(out, x, y, ta, tb, tiles)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
    out = np.full((8, 3), 7.0, np.float32)
    assert not mkl_gemm_parallel(out, a[:8, ::2][:, :10], np.ones((10, 3), np.float32), False, False, 2)
    assert (out == 7).all()


@needs_mkl
def test_mkl_gemm_refuses_an_operand_whose_elements_are_not_adjacent(rng):
    a = rng.standard_normal((8, 20)).astype(np.float32)[:, ::2]  # every other column
    out = np.full((8, 3), 7.0, np.float32)
    assert not mkl_gemm(out, a, np.ones((10, 3), np.float32), False, False)
    assert (out == 7).all()  # untouched: the caller falls back to np.dot


@needs_mkl
@pytest.mark.parametrize("layout", [0, 1, 2])
def test_repeat_product_computes_the_same_product_through_either_library(layout, rng):
    shape_a, shape_b, product = [((24, 16), (16, 12), lambda a, b: a @ b),
                                 ((24, 16), (24, 12), lambda a, b: a.T @ b),
                                 ((24, 12), (16, 12), lambda a, b: a @ b.T)][layout]
    a, b = rng.standard_normal(shape_a).astype(np.float32), rng.standard_normal(shape_b).astype(np.float32)
    expected = product(a, b)
    for mkl in (False, True):
        out = np.full(expected.shape, np.nan, np.float32)
        repeat_product(out, a, b, layout, mkl, 2)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_gemm_bits_and_tiles_read_the_layer_or_give_zero_and_none_without_a_plan():
    bits = np.array([0, 5, 2], np.int64)

    @numba.njit
    def compiled(gemm, k):
        return gemm_bits(gemm, k), gemm_tiles(gemm) is None
    for read in (lambda gemm, k: (gemm_bits(gemm, k), gemm_tiles(gemm) is None), compiled):
        assert read(None, 3) == (0, True)
        assert read(bits, 1) == (5, True)
        assert read(TiledGemm(bits, 4), 1) == (5, False)
    assert gemm_tiles(TiledGemm(bits, 4)) == 4


TABLE = np.array([[0, 0, 784, 100, 1, 1],     # Dense 784 -> 100 (W_OFF, B_OFF, N_IN, N_OUT, ACT, KIND)
                  [0, 0, 100, 100, 1, 0],     # an Activation layer: no product
                  [0, 0, 100, 10, 1, 1]], np.int64)


def fake_times(monkeypatch, mkl_wins):
    """time_product stubbed: MKL twice as fast where ``mkl_wins(rows, n_in, n_out, product)``."""
    calls = []

    def times(dtype, rows, n_in, n_out, product):
        calls.append((rows, n_in, n_out, product))
        return (1.0, 0.5) if mkl_wins(rows, n_in, n_out, product) else (1.0, 1.0)
    monkeypatch.setattr(blas, "time_product", times)
    monkeypatch.setattr(blas, "_choices", {})
    return calls


def test_plan_is_none_without_mkl(monkeypatch):
    monkeypatch.setattr(config, "MKL", False)
    assert blas.plan(TABLE, 50, np.float32, True, 1) is None


def test_plan_gives_mkl_the_products_it_runs_faster_on_one_thread(monkeypatch):
    monkeypatch.setattr(config, "MKL", True)
    monkeypatch.setattr(config, "BLAS_CHOICE", "auto")
    calls = fake_times(monkeypatch, lambda rows, n_in, n_out, product: n_in == 784 or product == GEMM_INPUT)
    gemm = blas.plan(TABLE, 50, np.float32, True, 1)
    assert gemm.tolist() == [GEMM_FORWARD | GEMM_WEIGHTS, 0, GEMM_INPUT]
    # No dx for the first layer, nothing for the Activation layer; each shape timed once.
    assert sorted(calls) == sorted([(50, 784, 100, GEMM_FORWARD), (50, 784, 100, GEMM_WEIGHTS),
                                    (50, 100, 10, GEMM_FORWARD), (50, 100, 10, GEMM_WEIGHTS),
                                    (50, 100, 10, GEMM_INPUT)])
    blas.plan(TABLE, 50, np.float32, True, 1)
    assert len(calls) == 5
    # Inference: the forward products only; a CSR first layer (no BLAS): not timed.
    assert blas.plan(TABLE, 50, np.float32, False, 1).tolist() == [GEMM_FORWARD, 0, 0]
    assert blas.plan(TABLE, 50, np.float32, True, 1, skip_first=True).tolist() == [0, 0, GEMM_INPUT]


def fake_tiles(monkeypatch, possible, faster):
    """Tiles possible or not (MKL on its sequential layer, Numba on TBB, one process) and timed
    faster or not: the step's timings recorded, not run."""
    for name in ("MKL", "MKL_SEQUENTIAL", "PARALLEL"):
        monkeypatch.setattr(config, name, possible)
    timed = []

    def tiles_faster(dtype, rows, step, threads):
        timed.append((rows, tuple(step), threads))
        return faster
    monkeypatch.setattr(blas, "tiles_faster", tiles_faster)
    return timed


def test_plan_times_nothing_for_few_rows_for_types_only_or_where_tiles_cannot_run(monkeypatch):
    monkeypatch.setattr(config, "BLAS_CHOICE", "auto")
    calls = fake_times(monkeypatch, lambda *shape: True)
    timed = fake_tiles(monkeypatch, True, True)
    for args in [(config.FEW_ROWS, 1, True), (50, 1, False), (50, None, True), (config.FEW_ROWS, 2, True)]:
        rows, threads, measure = args
        gemm = blas.plan(TABLE, rows, np.float32, True, threads, measure)
        assert gemm.dtype == np.int64 and gemm.tolist() == [0, 0, 0]
    # Several threads without MKL's sequential layer or Numba's TBB threads: OpenBLAS's threads.
    for name in ("MKL_SEQUENTIAL", "PARALLEL"):
        monkeypatch.setattr(config, name, False)
        assert blas.plan(TABLE, 50, np.float32, True, 2).tolist() == [0, 0, 0]
        monkeypatch.setattr(config, name, True)
    assert calls == [] and timed == []


def test_plan_runs_a_several_thread_training_steps_products_as_tiles_where_they_win(monkeypatch):
    monkeypatch.setattr(config, "BLAS_CHOICE", "auto")
    calls = fake_times(monkeypatch, lambda *shape: True)
    timed = fake_tiles(monkeypatch, True, True)
    everything = GEMM_FORWARD | GEMM_WEIGHTS | GEMM_INPUT
    gemm = blas.plan(TABLE, 256, np.float32, True, 3)
    assert isinstance(gemm, TiledGemm) and gemm.tiles == 3
    assert gemm.bits.tolist() == [GEMM_FORWARD | GEMM_WEIGHTS, 0, everything]
    # One timing of the whole step (no dx for the first layer, nothing for the Activation layer).
    assert timed == [(256, ((0, 784, 100, GEMM_FORWARD), (0, 784, 100, GEMM_WEIGHTS), (2, 100, 10, GEMM_FORWARD),
                            (2, 100, 10, GEMM_WEIGHTS), (2, 100, 10, GEMM_INPUT)), 3)]
    assert blas.tiled(blas.plan(TABLE, 256, np.float32, True, 3)) and not blas.tiled(np.zeros(3, np.int64))
    # Tiles are for training steps: inference on several threads keeps OpenBLAS's threads.
    assert blas.plan(TABLE, 256, np.float32, False, 3).tolist() == [0, 0, 0]
    # Timed slower: OpenBLAS.
    fake_tiles(monkeypatch, True, False)
    assert blas.plan(TABLE, 256, np.float32, True, 3).tolist() == [0, 0, 0]
    assert calls == []


def test_fastnn_blas_mkl_gives_mkl_every_product_without_timing(monkeypatch):
    monkeypatch.setattr(config, "BLAS_CHOICE", "mkl")
    calls = fake_times(monkeypatch, lambda *shape: False)
    timed = fake_tiles(monkeypatch, True, False)
    everything = GEMM_FORWARD | GEMM_WEIGHTS | GEMM_INPUT
    assert blas.plan(TABLE, 256, np.float32, True, 1).tolist() == [GEMM_FORWARD | GEMM_WEIGHTS, 0, everything]
    gemm = blas.plan(TABLE, 256, np.float32, True, 2)
    assert gemm.tiles == 2 and gemm.bits.tolist() == [GEMM_FORWARD | GEMM_WEIGHTS, 0, everything]
    assert calls == [] and timed == []


def test_an_unknown_fastnn_blas_is_refused_at_import():
    done = subprocess.run([sys.executable, "-c", "import fastnn"], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, FASTNN_BLAS="atlas"))
    assert done.returncode != 0 and "FASTNN_BLAS must be one of auto, openblas, mkl" in done.stderr


@needs_mkl
def test_training_with_mkls_products_matches_openblas(monkeypatch, rng):
    """The same five steps with every product through MKL and through OpenBLAS (one thread): the
    same parameters up to float32 rounding of a different summation order."""
    x = rng.standard_normal((250, 30)).astype(np.float32)
    y = rng.integers(0, 4, 250)
    results = []
    for bits in (0, GEMM_FORWARD | GEMM_WEIGHTS | GEMM_INPUT):
        monkeypatch.setattr(blas, "plan", lambda table, *args, bits=bits, **kwargs: np.full(table.shape[0], bits,
                                                                                           np.int64))
        model = fastnn.MLP([fastnn.Dense(30, 40, activation="relu"), fastnn.Dense(40, 20, activation="tanh"),
                            fastnn.Dense(20, 4, activation="softmax")], seed=3)
        model.compile(loss="cross_entropy", optimizer=fastnn.Adam(1e-2))
        monkeypatch.setattr(fastnn.threading, "_num_threads", 1)  # (set_num_threads(1), undone after the test)
        model.fit(x, y, epochs=1, batch_size=50, shuffle=False, verbose=0)
        results.append((model.get_weights(), model.predict(x, batch_size=125)))
    (w_ob, p_ob), (w_mkl, p_mkl) = results
    for a, b in zip(w_ob, w_mkl):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p_ob, p_mkl, rtol=1e-4, atol=1e-6)


@needs_mkl
@pytest.mark.parametrize("tiles", [2, 3])
def test_training_with_mkls_products_as_tiles_matches_openblas(monkeypatch, tiles, rng):
    """Five steps with every product as MKL tiles on Numba's threads against OpenBLAS: the same
    parameters up to float32 rounding, and predict's products (one call each) agree."""
    x = rng.standard_normal((250, 30)).astype(np.float32)
    y = rng.integers(0, 4, 250)
    results = []
    everything = GEMM_FORWARD | GEMM_WEIGHTS | GEMM_INPUT
    for plan in (lambda table, *args, **kwargs: np.zeros(table.shape[0], np.int64),
                 lambda table, *args, **kwargs: TiledGemm(np.full(table.shape[0], everything, np.int64), tiles)):
        monkeypatch.setattr(blas, "plan", plan)
        model = fastnn.MLP([fastnn.Dense(30, 40, activation="relu"), fastnn.Dense(40, 20, activation="tanh"),
                            fastnn.Dense(20, 4, activation="softmax")], seed=3)
        model.compile(loss="cross_entropy", optimizer=fastnn.Adam(1e-2))
        model.fit(x, y, epochs=1, batch_size=50, shuffle=False, verbose=0)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_step_whose_products_are_tiles_runs_adams_parallel_pass_as_one_on_one_blas_thread_does():
    """Where no BLAS thread waits busily beside it (tiles: ``blas.tiled``), a model of at least
    ``PARALLEL_OPTIMIZER_MIN_PARAMS`` runs Adam in parallel; on BLAS's threads it does not."""
    model = fastnn.MLP([fastnn.Dense(784, 512, activation="relu"), fastnn.Dense(512, 10, activation="softmax")])
    model.compile(loss="cross_entropy", optimizer=fastnn.Adam())
    model._ensure_built()
    backend = model._backend
    assert backend.params.size >= config.PARALLEL_OPTIMIZER_MIN_PARAMS
    if config.PARALLEL_PASSES_CHOSEN:
        pytest.skip("FASTNN_PARALLEL chose the passes")
    assert backend._parallel_optimizer(None, 256, tiled=True) is (True if config.PARALLEL else None)
    assert backend._parallel_optimizer(None, 256) is None  # (the step's FLOPs put BLAS on several threads)


@needs_mkl
def test_compile_train_compiles_the_step_that_train_then_runs_tiles_included(monkeypatch, rng):
    """fit's compile_train (verbose) types the step as train's first call does: with its products
    as tiles, the step's Network holds a TiledGemm, and Adam's parallel pass beside them."""
    from fastnn.kernels import network
    if not blas.tiles_possible():
        pytest.skip("no MKL tiles here (MKL's sequential layer, Numba's TBB layer, one process)")
    monkeypatch.setattr(config, "BLAS_CHOICE", "mkl")  # (tiles on several threads, untimed)
    monkeypatch.setattr(fastnn.threading, "_num_threads", 2)
    real = network.train_batches
    seen = {"compiled": [], "run": []}

    class Step:  # train_batches, recording the types it is compiled for and called with
        overloads, stats = {}, real.stats

        def compile(self, types):
            seen["compiled"].append(types)

        def __call__(self, *args):
            seen["run"].append(tuple(numba.typeof(a) for a in args))
            return -1
    monkeypatch.setattr(network, "train_batches", Step())
    model = fastnn.MLP([fastnn.Dense(784, 400, activation="relu"), fastnn.Dense(400, 10, activation="softmax")])
    model.compile(loss="cross_entropy", optimizer=fastnn.Adam())
    x = rng.random((256, 784), dtype=np.float32)
    model.fit(x, rng.integers(0, 10, 256), batch_size=128, epochs=1, verbose=1)
    assert seen["compiled"] and seen["run"] and seen["compiled"][0] == seen["run"][0]
    assert "TiledGemm" in str(seen["run"][0][0])


@needs_mkl
def test_mkls_thread_count_is_the_calls_and_is_put_back():
    lib = config.MKL_LIBRARY
    lib.MKL_Get_Max_Threads.restype = int
    outside = lib.MKL_Get_Max_Threads()
    with blas_threads_for(1.0):  # below BLAS_PARALLEL_MIN_FLOPS: one thread
        assert call_blas_threads() == 1
        assert lib.MKL_Get_Max_Threads() == 1
    assert call_blas_threads() is None
    assert lib.MKL_Get_Max_Threads() == outside


@needs_mkl
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps")
def test_mkl_runs_on_its_sequential_layer_and_loads_no_openmp_runtime():
    """fastnn's copy of MKL runs on MKL's sequential layer: after a product through MKL, Intel
    OpenMP's runtime is not in the process (beside a second copy it stops the process)."""
    code = textwrap.dedent("""
        import json
        import numpy as np
        from fastnn import config
        from fastnn.kernels.dense import repeat_product
        a = np.full((64, 64), 0.5, np.float32)
        out = np.empty_like(a)
        repeat_product(out, a, a, 0, True, 1)
        print(json.dumps({"sequential": bool(config.MKL_SEQUENTIAL), "product": float(out[3, 5]),
                          "openmp": "libiomp5" in open("/proc/self/maps").read()}))
    """)
    assert run_python(code, timeout=120) == {"sequential": True, "product": 16.0, "openmp": False}


@needs_mkl
@pytest.mark.skipif(not hasattr(os, "RTLD_NOLOAD"), reason="no RTLD_NOLOAD")
def test_a_copy_of_mkl_that_another_library_loaded_keeps_its_threading_layer():
    """MKL loaded before fastnn by another library: fastnn uses that copy and leaves its layer to
    that library, which still chooses Intel OpenMP's after fastnn's import (MKL keeps the first
    layer set)."""
    code = textwrap.dedent(f"""
        import ctypes, json
        other = ctypes.CDLL({config.MKL_LIBRARY._name!r})
        from fastnn import config
        print(json.dumps({{"mkl": config.MKL, "sequential": bool(config.MKL_SEQUENTIAL),
                          "layer": other.MKL_Set_Threading_Layer(0)}}))  # MKL_THREADING_INTEL
    """)
    assert run_python(code, timeout=120) == {"mkl": True, "sequential": False, "layer": 0}


@needs_mkl
@pytest.mark.slow  # child processes that compile and train
@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_fork_pool_works_after_mkl_ran():
    """Children of a process whose products ran through MKL (on one thread: MKL starts no thread
    of Intel OpenMP) train and predict through MKL themselves, with the parent's result."""
    code = TRAIN + textwrap.dedent("""
        import json, multiprocessing
        fastnn.set_num_threads(1)
        parent = fit_once(0)
        with multiprocessing.get_context("fork").Pool(2) as pool:
            children = pool.map_async(fit_once, [0, 1]).get(timeout=120)
        print(json.dumps({"parent": parent, "children": children}))
    """)
    result = run_python(code, dict(os.environ, FASTNN_BLAS="mkl"), timeout=300)
    assert result["children"][0] == pytest.approx(result["parent"], rel=1e-5)
    assert result["children"][1] > 0
