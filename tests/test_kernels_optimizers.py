"""Tests of fastnn.kernels.optimizers against the published update rules, step by step.

Each ``naive_*`` below follows the algorithm box of the torch.optim class named in its
docstring, written as plainly as possible in float64. Every kernel, on a small size and a
larger one that is no multiple of any vector width, in float32 and float64, runs 5
consecutive steps on random gradients and must land on the same parameters and state.
torch.optim itself is a second oracle where it is importable.
"""
import numpy as np
import pytest

from fastnn.kernels import optimizers as K

STEPS = 5
SIZES = {"small": 37, "big": 40_009}
DTYPES = [np.float32, np.float64]
# float64: the kernels and the references differ only by operation order (a few ulps of an
# update). float32: the kernels round every step in float32, the references do not.
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


# ---- references ---------------------------------------------------------------------------

def naive_sgd(params, grads, lr, momentum=0.0, nesterov=False):
    """torch.optim.SGD, dampening 0, no weight decay. Returns (params, momentum buffer)."""
    p = params.astype(np.float64)
    buf = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if momentum != 0:
            buf = g.copy() if t == 1 else momentum * buf + g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p, buf


def naive_adam(params, grads, lr, beta1, beta2, eps, weight_decay=0.0):
    """torch.optim.Adam (Kingma & Ba, Algorithm 1); with ``weight_decay``, torch.optim.AdamW
    (Loshchilov & Hutter, Algorithm 2: p = p - lr * weight_decay * p before the Adam step).
    Returns (params, m, v)."""
    p = params.astype(np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        p = p - lr * weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v


def naive_rmsprop(params, grads, lr, alpha, eps):
    """torch.optim.RMSprop, no momentum, not centered. Returns (params, square_avg)."""
    p = params.astype(np.float64)
    v = np.zeros_like(p)
    for g in grads:
        g = g.astype(np.float64)
        v = alpha * v + (1 - alpha) * g * g
        p = p - lr * g / (np.sqrt(v) + eps)
    return p, v


def naive_adagrad(params, grads, lr, eps, initial_accumulator_value=0.0):
    """torch.optim.Adagrad, lr_decay 0, no weight decay. Returns (params, state_sum)."""
    p = params.astype(np.float64)
    s = np.full_like(p, initial_accumulator_value)
    for g in grads:
        g = g.astype(np.float64)
        s = s + g * g
        p = p - lr * g / (np.sqrt(s) + eps)
    return p, s


# ---- cases: (kernel name, hyper-parameters) ------------------------------------------------

SGD_CASES = {
    "plain": dict(lr=0.1, momentum=0.0, nesterov=False),
    "momentum": dict(lr=0.1, momentum=0.9, nesterov=False),
    "nesterov": dict(lr=0.1, momentum=0.8, nesterov=True),
}
# eps large enough that where it enters the formula shows in float64.
ADAM_CASES = {
    "defaults": dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8),
    "strong": dict(lr=0.05, beta1=0.8, beta2=0.95, eps=1e-3),
    "adamw_defaults": dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01),
    "adamw_strong": dict(lr=0.05, beta1=0.8, beta2=0.95, eps=1e-3, weight_decay=0.5),
}
RMSPROP_CASES = {
    "defaults": dict(lr=0.01, alpha=0.99, eps=1e-8),
    "strong": dict(lr=0.03, alpha=0.9, eps=1e-3),
}
ADAGRAD_CASES = {
    "zero_accumulator": dict(lr=0.1, eps=1e-10, initial_accumulator_value=0.0),
    "initial_accumulator": dict(lr=0.1, eps=1e-3, initial_accumulator_value=0.1),
}
KERNELS = {"sgd": K.sgd_step, "adam": K.adam_step, "rmsprop": K.rmsprop_step, "adagrad": K.adagrad_step}


def problem(size, dtype, seed=3):
    """Initial parameters and STEPS gradients of varied scale (some tiny, so eps matters)."""
    rng = np.random.default_rng(seed)
    params = rng.standard_normal(size).astype(dtype)
    scale = np.where(rng.random(size) < 0.2, 1e-3, 1.0)
    grads = [(scale * rng.standard_normal(size)).astype(dtype) for _ in range(STEPS)]
    return params, grads


def check(actual, expected, dtype, what):
    assert actual.dtype == dtype, what
    np.testing.assert_allclose(actual, expected, **TOL[dtype], err_msg=what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", SGD_CASES)
def test_sgd_step(case, size, dtype):
    h = SGD_CASES[case]
    step = KERNELS["sgd"]
    params, grads = problem(SIZES[size], dtype)
    expected_p, expected_v = naive_sgd(params, grads, **h)
    p = params.copy()
    # Momentum 0 leaves the buffer alone: give it values that would show if it were used.
    v = np.full_like(p, 5.0) if h["momentum"] == 0 else np.zeros_like(p)
    for g in grads:
        step(p, g, v, h["lr"], h["momentum"], h["nesterov"])
    check(p, expected_p, dtype, "params")
    if h["momentum"] == 0:
        np.testing.assert_array_equal(v, 5.0)
    else:
        check(v, expected_v, dtype, "velocity")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", ADAM_CASES)
def test_adam_step(case, size, dtype):
    h = ADAM_CASES[case]
    step = KERNELS["adam"]
    params, grads = problem(SIZES[size], dtype)
    expected = naive_adam(params, grads, **h)
    p, m, v = params.copy(), np.zeros_like(params), np.zeros_like(params)
    for t, g in enumerate(grads, start=1):
        step(p, g, m, v, h["lr"], h["beta1"], h["beta2"], h["eps"], t, h.get("weight_decay", 0.0))
    for name, actual, exp in zip(["params", "m", "v"], [p, m, v], expected):
        check(actual, exp, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", RMSPROP_CASES)
def test_rmsprop_step(case, size, dtype):
    h = RMSPROP_CASES[case]
    step = KERNELS["rmsprop"]
    params, grads = problem(SIZES[size], dtype)
    expected_p, expected_s = naive_rmsprop(params, grads, **h)
    p, s = params.copy(), np.zeros_like(params)
    for g in grads:
        step(p, g, s, h["lr"], h["alpha"], h["eps"])
    check(p, expected_p, dtype, "params")
    check(s, expected_s, dtype, "square_avg")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", ADAGRAD_CASES)
def test_adagrad_step(case, size, dtype):
    h = ADAGRAD_CASES[case]
    step = KERNELS["adagrad"]
    params, grads = problem(SIZES[size], dtype)
    expected_p, expected_s = naive_adagrad(params, grads, **h)
    p, s = params.copy(), np.full_like(params, h["initial_accumulator_value"])
    for g in grads:
        step(p, g, s, h["lr"], h["eps"])
    check(p, expected_p, dtype, "params")
    check(s, expected_s, dtype, "sum_sq")


# ---- optimizer_step: the H_* layout -------------------------------------------------------

def hyper(lr, h1=0.0, h2=0.0, eps=0.0, flag=0.0, decay=None):
    """Slots an optimizer does not read stay NaN: a kernel that read one would poison its update."""
    h = np.full(K.N_HYPER, np.nan)
    h[K.H_LR], h[K.H_1], h[K.H_2], h[K.H_EPS], h[K.H_FLAG] = lr, h1, h2, eps, flag
    if decay is not None:
        h[K.H_DECAY] = decay
    return h


DISPATCH_CASES = {
    "sgd": (K.SGD, hyper(0.1), lambda p, g: naive_sgd(p, g, 0.1)[:1]),
    "sgd_momentum": (K.SGD, hyper(0.1, h1=0.9), lambda p, g: naive_sgd(p, g, 0.1, 0.9)),
    "sgd_nesterov": (K.SGD, hyper(0.1, h1=0.8, flag=1.0), lambda p, g: naive_sgd(p, g, 0.1, 0.8, True)),
    "adam": (K.ADAM, hyper(0.05, h1=0.8, h2=0.95, eps=1e-3),
             lambda p, g: naive_adam(p, g, 0.05, 0.8, 0.95, 1e-3)),
    "adamw": (K.ADAMW, hyper(0.05, h1=0.8, h2=0.95, eps=1e-3, decay=0.3),
              lambda p, g: naive_adam(p, g, 0.05, 0.8, 0.95, 1e-3, 0.3)),
    "rmsprop": (K.RMSPROP, hyper(0.03, h1=0.9, eps=1e-3), lambda p, g: naive_rmsprop(p, g, 0.03, 0.9, 1e-3)),
    "adagrad": (K.ADAGRAD, hyper(0.1, eps=1e-3), lambda p, g: naive_adagrad(p, g, 0.1, 1e-3, 0.25)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", DISPATCH_CASES)
def test_optimizer_step_dispatch(case, size, dtype):
    kind, h, reference = DISPATCH_CASES[case]
    step = K.optimizer_step
    if kind in (K.SGD, K.RMSPROP, K.ADAGRAD):
        h = h.copy()
        # Slots an optimizer does not read: NaN there would poison any update that did.
        h[K.H_2] = np.nan
        if kind != K.SGD:
            h[K.H_FLAG] = np.nan
        if kind == K.SGD:
            h[K.H_EPS] = np.nan
        if kind == K.ADAGRAD:
            h[K.H_1] = np.nan
    params, grads = problem(SIZES[size], dtype)
    expected = reference(params, grads)
    p = params.copy()
    s1 = np.full_like(p, 0.25 if kind == K.ADAGRAD else 0.0)
    s2 = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        step(kind, p, g, s1, s2, h, t)
    check(p, expected[0], dtype, "params")
    if len(expected) > 1:
        check(s1, expected[1], dtype, "state1")
    if len(expected) > 2:
        check(s2, expected[2], dtype, "state2")
    else:
        np.testing.assert_array_equal(s2, 0.0)


# ---- torch.optim as an oracle (optional) --------------------------------------------------

TORCH_CASES = {
    "sgd": (lambda o, p: o.SGD([p], lr=0.1), "sgd", (0.1, 0.0, False)),
    "sgd_momentum": (lambda o, p: o.SGD([p], lr=0.1, momentum=0.9), "sgd", (0.1, 0.9, False)),
    "sgd_nesterov": (lambda o, p: o.SGD([p], lr=0.1, momentum=0.8, nesterov=True), "sgd", (0.1, 0.8, True)),
    "adam": (lambda o, p: o.Adam([p], lr=0.05, betas=(0.8, 0.95), eps=1e-3), "adam", (0.05, 0.8, 0.95, 1e-3)),
    "adam_defaults": (lambda o, p: o.Adam([p], lr=1e-3), "adam", (1e-3, 0.9, 0.999, 1e-8)),
    "adamw": (lambda o, p: o.AdamW([p], lr=0.05, betas=(0.8, 0.95), eps=1e-3, weight_decay=0.3), "adamw",
              (0.05, 0.8, 0.95, 1e-3)),
    "adamw_defaults": (lambda o, p: o.AdamW([p], lr=1e-3), "adamw", (1e-3, 0.9, 0.999, 1e-8)),
    "rmsprop": (lambda o, p: o.RMSprop([p], lr=0.03, alpha=0.9, eps=1e-3), "rmsprop", (0.03, 0.9, 1e-3)),
    "adagrad": (lambda o, p: o.Adagrad([p], lr=0.1, eps=1e-3, initial_accumulator_value=0.25), "adagrad",
                (0.1, 1e-3)),
}


@pytest.mark.parametrize("case", TORCH_CASES)
def test_against_torch_optim(case):
    torch = pytest.importorskip("torch")
    make, name, args = TORCH_CASES[case]
    params, grads = problem(SIZES["small"], np.float64)
    tp = torch.tensor(params.copy(), requires_grad=True)
    opt = make(torch.optim, tp)
    for g in grads:
        tp.grad = torch.tensor(g)
        opt.step()
    p = params.copy()
    n_state = 2 if name in ("adam", "adamw") else 1
    state = [np.full_like(p, 0.25 if name == "adagrad" else 0.0)] + [np.zeros_like(p)] * (n_state - 1)
    for t, g in enumerate(grads, start=1):
        if name == "adamw":  # torch's AdamW defaults: weight_decay 0.01 unless the case sets it
            decay = 0.3 if case == "adamw" else 0.01
            K.adam_step(p, g, *state, *args, t, decay)
        else:
            KERNELS[name](p, g, *state, *args, *((t, 0.0) if name == "adam" else ()))
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-14)



# ---- denormal states ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["sgd_momentum", "adam", "adamw", "rmsprop"])
def test_states_below_the_smallest_normal_are_stored_as_zero(case, dtype):
    """A zero gradient decays the state; once it would be denormal (slow on Intel cores) it is 0,
    while normal states, and NaN, pass through as the rule computes them."""
    kind, h, _ = DISPATCH_CASES[case]
    h = np.where(np.isnan(h), 0.0, h)
    tiny = np.finfo(dtype).tiny
    state = np.array([tiny * 0.5, tiny * 1.01, 1e-3, np.nan], dtype=dtype)  # both denormal after a decay <= 0.95
    p = np.ones(4, dtype=dtype)
    s1, s2 = state.copy(), state.copy()
    K.optimizer_step(kind, p, np.zeros(4, dtype=dtype), s1, s2, h, 3)
    touched = [s1, s2] if kind in (K.ADAM, K.ADAMW) else [s1]
    for s in touched:
        assert s[0] == 0 and s[1] == 0  # 0.5 tiny and 1.01 tiny x decay are below tiny: flushed
        assert s[2] > tiny and np.isnan(s[3])
    assert np.isfinite(p[:3]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["adam", "adamw", "rmsprop", "adagrad"])
def test_gradients_whose_square_would_be_denormal_count_as_zero(case, dtype):
    """Below sqrt(tiny / (1 - beta2)) (Adagrad: sqrt(tiny)) a gradient is taken as 0, so no
    denormal square is ever computed; just above it, the rule runs as published."""
    kind, h, _ = DISPATCH_CASES[case]
    h = np.where(np.isnan(h), 0.0, h)
    decay = 1.0 if kind == K.ADAGRAD else 1.0 - h[K.H_2 if kind in (K.ADAM, K.ADAMW) else K.H_1]
    small = np.sqrt(np.finfo(dtype).tiny / decay)
    grads = np.array([small * 0.5, -small * 0.5, small * 4, np.nan], dtype=dtype)
    s1, s2, p = np.zeros(4, dtype=dtype), np.zeros(4, dtype=dtype), np.ones(4, dtype=dtype)
    K.optimizer_step(kind, p, grads, s1, s2, h, 1)
    square = s2 if kind in (K.ADAM, K.ADAMW) else s1
    assert square[0] == 0 and square[1] == 0  # the square term was skipped
    assert square[2] >= np.finfo(dtype).tiny and np.isnan(square[3])
