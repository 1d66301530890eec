"""A model's lock (fastnn.locks): predicts share it and run at the same time; training, building
and writing weights hold it alone; and the BLAS thread count comes back after concurrent calls."""
import threading
import time

import numpy as np
import pytest

from fastnn import MLP, Dense
from fastnn import threading as fastnn_threading
from fastnn.locks import ModelLock

WAIT = 0.2  # long enough for a thread that is not blocked to finish a tiny step


def start(target):
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


def test_shared_holders_run_together_and_the_exclusive_one_waits_for_them():
    lock = ModelLock()
    inside, release = threading.Barrier(3), threading.Event()

    def reader():
        with lock.shared():
            inside.wait(timeout=5)  # only passes when both readers are inside at once
            release.wait(timeout=5)

    readers = [start(reader), start(reader)]
    inside.wait(timeout=5)
    writer_done = threading.Event()
    writer = start(lambda: (lock.acquire(), writer_done.set(), lock.release()))
    time.sleep(WAIT)
    assert not writer_done.is_set()  # two shared holders: the exclusive one waits
    release.set()
    for t in readers + [writer]:
        t.join(timeout=5)
    assert writer_done.is_set()


def test_the_exclusive_holder_reenters_and_may_take_it_shared():
    lock = ModelLock()
    with lock:
        with lock:
            with lock.shared():  # a callback's predict during fit
                pass
        other = threading.Event()
        t = start(lambda: (lock.acquire(), other.set(), lock.release()))
        time.sleep(WAIT)
        assert not other.is_set()
    t.join(timeout=5)
    assert other.is_set()
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()


def test_a_waiting_exclusive_holder_goes_before_new_shared_ones():
    lock = ModelLock()
    order = []
    first = threading.Event()

    def reader(name, hold):
        with lock.shared():
            order.append(name)
            first.set()
            time.sleep(hold)

    a = start(lambda: reader("a", 3 * WAIT))
    first.wait(timeout=5)
    w = start(lambda: (lock.acquire(), order.append("w"), lock.release()))
    time.sleep(WAIT)  # w now waits for a
    b = start(lambda: reader("b", 0))
    for t in (a, w, b):
        t.join(timeout=5)
    assert order == ["a", "w", "b"]


def small_model():
    model = MLP([Dense(6, 5, activation="relu"), Dense(5, 3, activation="softmax")], seed=0)
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    return model


@pytest.mark.parametrize("rows", [2, 50])  # the few-row path and the batch path
def test_a_predict_runs_while_another_holds_the_model_shared_and_waits_while_it_trains(rows):
    model = small_model()
    x = np.random.default_rng(0).random((rows, 6)).astype(np.float32)
    expected = model.predict(x)
    got = []
    with model._lock.shared():  # another thread's predict in progress
        t = start(lambda: got.append(model.predict(x)))
        t.join(timeout=5)
        assert got, "predict waited for another predict"
    with model._lock:  # fit in progress
        t = start(lambda: got.append(model.predict(x)))
        time.sleep(WAIT)
        assert len(got) == 1, "predict ran while the model was held for training"
    t.join(timeout=5)
    assert len(got) == 2
    for g in got:
        np.testing.assert_array_equal(g, expected)


def test_concurrent_predicts_give_right_answers_and_put_the_blas_threads_back():
    model = small_model()
    rng = np.random.default_rng(1)
    inputs = [rng.random((n, 6)).astype(np.float32) for n in (1, 3, 40, 700)]
    expected = [model.predict(x) for x in inputs]
    before = [lib.num_threads for lib in fastnn_threading._blas_controller().lib_controllers]
    errors = []

    def work(seed):
        r = np.random.default_rng(seed)
        for _ in range(30):
            i = int(r.integers(len(inputs)))
            try:
                np.testing.assert_array_equal(model.predict(inputs[i]), expected[i])
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [start(lambda s=s: work(s)) for s in range(4)]
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert [lib.num_threads for lib in fastnn_threading._blas_controller().lib_controllers] == before
    assert fastnn_threading._active == 0
