"""Learning-rate schedules (Keras' formulas, evaluated per step inside the training step): each
against its Keras formula written in NumPy, training with a schedule against the same steps at
constant rates set by hand, saving and resuming, argument checks, and CUDA against the CPU."""
import math

import numpy as np
import pytest

import fastnn
from fastnn import SGD, Adam, CosineDecay, Dense, ExponentialDecay, InverseTimeDecay, MLP, PiecewiseConstantDecay
from helpers import cuda_or_skip

STEPS = range(0, 60)


def naive_exponential(step, lr, decay_steps, rate, staircase):
    p = step / decay_steps
    return lr * rate ** (math.floor(p) if staircase else p)


def naive_inverse_time(step, lr, decay_steps, rate, staircase):
    p = step / decay_steps
    return lr / (1 + rate * (math.floor(p) if staircase else p))


def naive_piecewise(step, boundaries, values):
    for b, v in zip(boundaries, values):
        if step <= b:
            return v
    return values[-1]


def naive_cosine(step, lr, decay_steps, alpha, warmup_target=None, warmup_steps=0):
    """keras.optimizers.schedules.CosineDecay."""
    peak = lr
    if warmup_target is not None:
        if step < warmup_steps:
            return lr + (warmup_target - lr) * step / warmup_steps
        step, peak = max(step - warmup_steps, 0), warmup_target
    step = min(step, decay_steps)
    return peak * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * step / decay_steps)) + alpha)


CASES = {
    "exponential": (ExponentialDecay(0.1, 7, 0.5), lambda s: naive_exponential(s, 0.1, 7, 0.5, False)),
    "exponential_staircase": (ExponentialDecay(0.1, 7, 0.5, staircase=True),
                              lambda s: naive_exponential(s, 0.1, 7, 0.5, True)),
    "inverse_time": (InverseTimeDecay(0.2, 5, 0.3), lambda s: naive_inverse_time(s, 0.2, 5, 0.3, False)),
    "inverse_time_staircase": (InverseTimeDecay(0.2, 5, 0.3, staircase=True),
                               lambda s: naive_inverse_time(s, 0.2, 5, 0.3, True)),
    "piecewise": (PiecewiseConstantDecay([10, 20, 35], [0.3, 0.2, 0.1, 0.05]),
                  lambda s: naive_piecewise(s, [10, 20, 35], [0.3, 0.2, 0.1, 0.05])),
    "cosine": (CosineDecay(0.1, 40, alpha=0.1), lambda s: naive_cosine(s, 0.1, 40, 0.1)),
    "cosine_warmup": (CosineDecay(0.0, 30, warmup_target=0.2, warmup_steps=10),
                      lambda s: naive_cosine(s, 0.0, 30, 0.0, 0.2, 10)),
}


@pytest.mark.parametrize("case", CASES)
def test_schedule_follows_keras_formula(case):
    schedule, naive = CASES[case]
    for step in STEPS:
        assert schedule(step) == pytest.approx(naive(step), rel=1e-12, abs=1e-15), step


def data(rows=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, 5)).astype(np.float64), rng.integers(0, 3, rows)


def model(optimizer, device="cpu", dtype="float64"):
    m = MLP([Dense(5, 4, activation="tanh"), Dense(4, 3, activation="softmax")], seed=3, device=device, dtype=dtype)
    m.compile(loss="cross_entropy", optimizer=optimizer)
    return m


@pytest.mark.parametrize("case", ["exponential_staircase", "piecewise", "cosine_warmup"])
def test_training_uses_the_rate_of_each_step(case):
    """fit with a schedule (one compiled call per epoch) equals train_on_batch at each step's rate."""
    schedule, _ = CASES[case]
    x, y = data()
    scheduled = model(SGD(schedule))
    manual = model(SGD(0.0))
    manual.set_weights(scheduled.get_weights())
    scheduled.fit(x, y, epochs=3, batch_size=4, shuffle=False, verbose=0)
    for step in range(30):
        manual.optimizer.learning_rate = schedule(step)
        lo = (step % 10) * 4
        manual.train_on_batch(x[lo:lo + 4], y[lo:lo + 4])
    for a, b in zip(scheduled.get_weights(), manual.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_optimizer_step_on_own_arrays_uses_the_schedule():
    opt = SGD(PiecewiseConstantDecay([1], [1.0, 0.1]))
    p, g = np.zeros(3), np.ones(3)
    for step in (1, 2, 3):  # steps 0 and 1 at rate 1.0, step 2 at 0.1
        opt.step(p, g, np.zeros(3), np.zeros(3), step)
    np.testing.assert_allclose(p, -2.1)


def test_saving_keeps_the_schedule_and_its_position(tmp_path):
    x, y = data()
    m = model(Adam(ExponentialDecay(0.05, 3, 0.7)))
    m.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    m.save(tmp_path / "s.npz")
    loaded = fastnn.load_model(tmp_path / "s.npz")
    assert isinstance(loaded.optimizer.learning_rate, ExponentialDecay)
    assert loaded.optimizer.learning_rate.get_config() == m.optimizer.learning_rate.get_config()
    m.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    loaded.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    for a, b in zip(m.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make, error, match", [
    (lambda: ExponentialDecay(0.1, 0, 0.5), ValueError, "decay_steps"),
    (lambda: ExponentialDecay(-0.1, 5, 0.5), ValueError, "initial_learning_rate"),
    (lambda: ExponentialDecay(0.1, 5, 0.5, staircase=1), TypeError, "staircase"),
    (lambda: InverseTimeDecay(0.1, -2, 0.5), ValueError, "decay_steps"),
    (lambda: PiecewiseConstantDecay([5, 3], [1, 2, 3]), ValueError, "increasing"),
    (lambda: PiecewiseConstantDecay([5], [1]), ValueError, "one more"),
    (lambda: PiecewiseConstantDecay(5, [1, 2]), TypeError, "lists"),
    (lambda: CosineDecay(0.1, 0), ValueError, "decay_steps"),
    (lambda: CosineDecay(0.1, 10, alpha=2), ValueError, "alpha"),
    (lambda: CosineDecay(0.1, 10, warmup_target=0.2), ValueError, "warmup_steps"),
    (lambda: SGD("fast"), TypeError, "learning_rate")])
def test_bad_arguments_name_themselves(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_schedules_of_different_lengths_in_one_model():
    """Two optimizers: a piecewise schedule (a longer hyper-parameter row) and a plain rate."""
    x, y = data()
    m = MLP([Dense(5, 4, activation="tanh", optimizer=SGD(PiecewiseConstantDecay([2, 4, 6], [0.4, 0.3, 0.2, 0.1]))),
             Dense(4, 3, activation="softmax", optimizer=SGD(0.05))], seed=3, dtype="float64")
    m.compile(loss="cross_entropy")
    m.fit(x, y, epochs=1, batch_size=4, verbose=0)
    hyper = m._opt_hyper()
    assert hyper.shape[1] > fastnn.kernels.optimizers.N_HYPER and hyper[1, fastnn.kernels.optimizers.H_LR] == 0.05


# Each schedule kind (and staircase) on CUDA; 10 updates: past ExponentialDecay's step 7, InverseTimeDecay's 5,
# the warmup's 10 and the piecewise boundaries 3 and 6.
CUDA_CASES = {
    "exponential": lambda: SGD(CASES["exponential"][0]),
    "exponential_staircase": lambda: SGD(CASES["exponential_staircase"][0]),
    "inverse_time": lambda: SGD(CASES["inverse_time"][0]),
    "inverse_time_staircase": lambda: SGD(CASES["inverse_time_staircase"][0]),
    "cosine_warmup": lambda: SGD(CASES["cosine_warmup"][0]),
    "piecewise_adam": lambda: Adam(PiecewiseConstantDecay([3, 6], [0.1, 0.05, 0.01])),
}


# By default two of the six: a decay with warmup, and piecewise boundaries with Adam. The other four
# take the same device path to another formula of learning_rate_at (the CPU's own source, checked
# per kind above); the simulator takes seconds per case, so they run with -m slow.
DEFAULT_CUDA_CASES = ("cosine_warmup", "piecewise_adam")


@pytest.mark.parametrize("case", [c if c in DEFAULT_CUDA_CASES else pytest.param(c, marks=pytest.mark.slow)
                                  for c in CUDA_CASES])
def test_cuda_matches_the_cpu(case):
    cuda_or_skip()
    x, y = data()
    x = x.astype(np.float32)
    make = CUDA_CASES[case]
    cpu, gpu = model(make(), dtype="float32"), model(make(), "cuda", dtype="float32")
    gpu.set_weights(cpu.get_weights())
    cpu.fit(x, y, epochs=2, batch_size=8, verbose=0)
    gpu.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for a, b in zip(gpu.get_weights(), cpu.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


class _Model:
    def __init__(self, optimizers):
        self._optimizers = optimizers

    def optimizers(self):
        return self._optimizers


def test_reduce_lr_on_plateau_follows_keras():
    """patience 2, cooldown 1, factor 0.5, min_lr 0.02: the rate halves after two epochs without an
    improvement of more than min_delta, not during the cooldown epoch, and never below min_lr."""
    sgd, scheduled = SGD(0.1), SGD(ExponentialDecay(0.1, 5, 0.5))
    cb = fastnn.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2, cooldown=1, min_lr=0.02, min_delta=0.01)
    cb.set_model(_Model([sgd, scheduled]))
    cb.on_train_begin()
    losses = [1.0, 0.9, 0.895, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    rates = []
    for epoch, loss in enumerate(losses):
        cb.on_epoch_end(epoch, {"loss": loss})
        rates.append(sgd.learning_rate)
    # Epochs 2 and 3 without improvement: 0.05 at epoch 3. As in Keras, the epoch that ends the
    # cooldown already counts (epoch 4), so the next halving is at 5, then max(0.0125, 0.02) at 7.
    assert rates == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.02, 0.02, 0.02, 0.02])
    assert isinstance(scheduled.learning_rate, ExponentialDecay)  # a schedule is left alone


@pytest.mark.parametrize("kwargs, match", [({"factor": 1.0}, "factor"), ({"factor": 0}, "factor"),
                                           ({"patience": -1}, "patience"), ({"min_lr": -1}, "min_lr")])
def test_reduce_lr_on_plateau_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fastnn.ReduceLROnPlateau(**kwargs)


def test_reduce_lr_on_plateau_in_fit():
    x, y = data()
    m = model(SGD(1e-9))  # learns nothing measurable: the loss never improves by min_delta
    cb = fastnn.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1)
    m.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[cb])
    assert m.optimizer.learning_rate == pytest.approx(1e-9 * 0.5 ** 3)
