"""Tests of fastnn's building blocks as objects: the public names, the seed framework's
camelCase keywords, defaults (PyTorch's for optimizers, Keras' for Dense), optimizer steps
against their published update rules, initializer statistics, and the activation and loss
objects against NumPy formulas and float64 central finite differences.

References (NumPy, top of file): ``naive_sgd``/``naive_adam``/``naive_rmsprop``/``naive_adagrad``
(the update rules of torch.optim's documentation), ``naive_activation``; ``naive_loss`` is in helpers.py.
"""
import inspect

import numpy as np
import pytest

import fastnn
from fastnn import (ELU, SGD, AdaGrad, Adam, Constant, CrossEntropy, Dense, GlorotNormal, GlorotUniform,
                    HeNormal, HeUniform, Identity, LeakyReLU, Normal, Ones, ReLU, RMSProp, Sigmoid, Softmax,
                    Tanh, Uniform, Zeros)
from fastnn.base import Configurable, deserialize, snake_case, translate_kwargs
from helpers import naive_loss


# --------------------------------------------------------------------------------------------
# NumPy references
# --------------------------------------------------------------------------------------------

def naive_sgd(p, g, state, lr, momentum=0.0, nesterov=False):
    """torch.optim.SGD, dampening 0: buf = g at the first step, then momentum * buf + g."""
    if momentum:
        state["buf"] = g.copy() if "buf" not in state else momentum * state["buf"] + g
        g = g + momentum * state["buf"] if nesterov else state["buf"]
    return p - lr * g


def naive_adamw(p, g, state, lr, beta1, beta2, eps, weight_decay):
    """Loshchilov & Hutter's AdamW (torch.optim.AdamW): decay p by lr * weight_decay, then Adam."""
    return naive_adam(p - lr * weight_decay * p, g, state, lr, beta1, beta2, eps)


def naive_adam(p, g, state, lr, beta1, beta2, eps):
    """Kingma & Ba, Algorithm 1 (torch.optim.Adam): bias-corrected moments."""
    t = state["t"] = state.get("t", 0) + 1
    state["m"] = beta1 * state.get("m", 0.0) + (1 - beta1) * g
    state["v"] = beta2 * state.get("v", 0.0) + (1 - beta2) * g * g
    m_hat = state["m"] / (1 - beta1 ** t)
    v_hat = state["v"] / (1 - beta2 ** t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


def naive_rmsprop(p, g, state, lr, alpha, eps):
    """torch.optim.RMSprop, not centered, no momentum."""
    state["s"] = alpha * state.get("s", 0.0) + (1 - alpha) * g * g
    return p - lr * g / (np.sqrt(state["s"]) + eps)


def naive_adagrad(p, g, state, lr, eps, initial_accumulator_value):
    """torch.optim.Adagrad, lr_decay 0."""
    state["s"] = state.get("s", initial_accumulator_value) + g * g
    return p - lr * g / (np.sqrt(state["s"]) + eps)


def naive_activation(name, z, alpha=0.0):
    if name == "identity":
        return z
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0)
    if name == "leaky_relu":
        return np.where(z > 0, z, alpha * z)
    if name == "elu":
        return np.where(z > 0, z, alpha * np.expm1(z))
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise KeyError(name)


def central_difference(f, x, eps=1e-6):
    grad = np.empty_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f(x)
        x[i] = old - eps
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


# --------------------------------------------------------------------------------------------
# Public names and the seed framework's keywords
# --------------------------------------------------------------------------------------------

PUBLIC_NAMES = [
    "MLP", "Sequential", "Perceptron", "Dense", "Input", "Activation", "Dropout", "Layer",
    "L1", "L2", "L1L2", "Regularizer", "ExponentialDecay", "InverseTimeDecay", "PiecewiseConstantDecay", "CosineDecay",
    "LearningRateSchedule",
    "Identity", "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "ELU", "Softmax", "Heaviside",
    "Loss", "MSE", "SSE", "MAE", "MAPE", "MSLE", "CosineSimilarity", "CrossEntropy", "BinaryCrossEntropy",
    "KLDivergence", "PerceptronCriterion",
    "Optimizer", "SGD", "Adam", "AdamW", "RMSProp", "RMSprop", "AdaGrad", "Adagrad",
    "Zeros", "Ones", "Constant", "Normal", "Uniform", "RandomNormal", "RandomUniform", "GlorotNormal",
    "GlorotUniform", "XavierNormal", "XavierUniform", "HeNormal", "HeUniform",
    "Callback", "History", "EarlyStopping", "LearningRateScheduler", "ReduceLROnPlateau", "ModelCheckpoint",
    "CSVLogger",
    "LambdaCallback", "TensorBoard",
    "Dataset", "load_digits", "load_mnist", "load_model",
    "set_num_threads", "get_num_threads", "threading_info",
]


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_name_is_importable_from_top_level(name):
    assert name in fastnn.__all__
    assert getattr(fastnn, name) is not None


def test_every_name_in_all_resolves():
    namespace = {}
    exec("from fastnn import *", namespace)
    missing = [n for n in fastnn.__all__ if n not in namespace]
    assert missing == []
    assert fastnn.__version__ == "0.1.0"


def test_snake_case():
    assert snake_case("learningRate") == "learning_rate"
    assert snake_case("inputDim") == "input_dim"
    assert snake_case("restoreBestWeights") == "restore_best_weights"
    assert snake_case("beta_1") == "beta_1"
    assert snake_case("units") == "units"


def test_seed_keywords_build_the_same_objects_as_snake_case():
    assert Dense(inputDim=3, outputDim=4).get_config() == Dense(input_dim=3, output_dim=4).get_config()
    adam = Adam(learningRate=0.002, beta_1=0.8, beta_2=0.99)
    assert (adam.learning_rate, adam.beta_1, adam.beta_2) == (0.002, 0.8, 0.99)
    sgd = SGD(learningRate=0.01, momentum=0)
    assert (sgd.learning_rate, sgd.momentum, sgd.nesterov) == (0.01, 0.0, False)
    assert LeakyReLU(epsilon=0.01).alpha == 0.01
    assert LeakyReLU(epsilon=0.2).get_config() == LeakyReLU(alpha=0.2).get_config() == {"alpha": 0.2}
    assert Dense(units=5, input_dim=2).output_dim == 5  # Keras' name
    assert Normal(stddev=0.3).std == 0.3 and Uniform(minval=-2, maxval=3).low == -2.0


def test_the_same_parameter_twice_is_a_type_error():
    with pytest.raises(TypeError, match="learning_rate"):
        Adam(learningRate=0.1, learning_rate=0.2)
    with pytest.raises(TypeError, match="alpha"):
        LeakyReLU(epsilon=0.1, alpha=0.2)
    with pytest.raises(TypeError, match="unexpected keyword"):
        Dense(inputDim=3, outputDim=4, bogusKeyword=1)


def _configurable_classes():
    return sorted({cls for cls in Configurable._registry.values() if "__init__" in cls.__dict__},
                  key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", _configurable_classes(), ids=lambda c: c.__name__)
def test_every_constructor_takes_camel_case_through_the_one_translation(cls):
    """One mechanism (Configurable in fastnn.base) translates for every class: each
    constructor is wrapped by it, and each multi-word parameter's camelCase maps onto it."""
    init = cls.__init__
    assert hasattr(init, "__wrapped__"), f"{cls.__name__}.__init__ is not wrapped by base.accepts_seed_keywords"
    for name in inspect.signature(init.__wrapped__).parameters:
        if "_" in name.strip("_") and not name[-1].isdigit():
            head, *rest = name.split("_")
            camel = head + "".join(w.capitalize() for w in rest)
            assert translate_kwargs(init.__wrapped__, cls._aliases, {camel: 1}) == {name: 1}


# --------------------------------------------------------------------------------------------
# Defaults
# --------------------------------------------------------------------------------------------

def test_optimizer_defaults_are_pytorchs():
    adam = Adam()
    assert (adam.learning_rate, adam.beta_1, adam.beta_2, adam.epsilon) == (1e-3, 0.9, 0.999, 1e-8)
    adamw = fastnn.AdamW()
    assert (adamw.learning_rate, adamw.beta_1, adamw.beta_2, adamw.epsilon, adamw.weight_decay) == \
        (1e-3, 0.9, 0.999, 1e-8, 0.01)
    rms = RMSProp()
    assert (rms.learning_rate, rms.rho, rms.epsilon) == (0.01, 0.99, 1e-8)
    ada = AdaGrad()
    assert (ada.learning_rate, ada.epsilon, ada.initial_accumulator_value) == (0.01, 1e-10, 0.0)
    sgd = SGD()
    assert (sgd.momentum, sgd.nesterov) == (0.0, False)
    assert fastnn.RMSprop is RMSProp and fastnn.Adagrad is AdaGrad


def test_dense_defaults():
    layer = Dense(3, 4)
    assert isinstance(layer.activation, Sigmoid)  # the seed framework's default
    assert layer.optimizer is None  # compile's optimizer, else Adam
    assert isinstance(layer.kernel_initializer, GlorotUniform)
    assert isinstance(layer.bias_initializer, Zeros)
    assert isinstance(Dense(3, 4, activation=None).activation, Identity)
    assert isinstance(Dense(3, 4, activation="relu").activation, ReLU)


def test_dense_without_optimizer_uses_adam_or_the_compile_optimizer():
    model = fastnn.MLP([Dense(3, 4), Dense(4, 2)], seed=0)
    (default,) = model.optimizers()
    assert isinstance(default, Adam) and default.learning_rate == 1e-3
    sgd = SGD(0.1)
    model.compile(loss="mse", optimizer=sgd)
    assert model.optimizers() == [sgd]
    own = RMSProp()
    model2 = fastnn.MLP([Dense(3, 4, optimizer=own), Dense(4, 2)], seed=0).compile("mse", optimizer=sgd)
    assert model2.optimizers() == [own, sgd]


@pytest.mark.parametrize("name, cls", [("relu", ReLU), ("ReLU", ReLU), ("softmax", Softmax), ("tanh", Tanh),
                                       ("linear", Identity), ("leaky_relu", LeakyReLU), ("elu", ELU)])
def test_activation_names(name, cls):
    assert isinstance(Dense(2, 2, activation=name).activation, cls)


@pytest.mark.parametrize("name, cls", [("sgd", SGD), ("adam", Adam), ("adamw", fastnn.AdamW), ("rmsprop", RMSProp),
                                       ("adagrad", AdaGrad)])
def test_optimizer_names(name, cls):
    assert isinstance(Dense(2, 2, optimizer=name).optimizer, cls)
    assert isinstance(Dense(2, 2, optimizer=cls).optimizer, cls)


@pytest.mark.parametrize("obj", [Dense(3, 4, activation=LeakyReLU(0.2), optimizer=SGD(0.5, momentum=0.9)),
                                 Adam(0.01, beta_1=0.8), fastnn.AdamW(weight_decay=0.1), fastnn.Dropout(0.3),
                                 ELU(0.5), Normal(1.0, 2.0), fastnn.Input((28, 28)),
                                 fastnn.Activation("softmax"), fastnn.EarlyStopping(patience=3)],
                         ids=lambda o: type(o).__name__)
def test_get_config_round_trip(obj):
    spec = {"class_name": type(obj).__name__, "config": obj.get_config()}
    rebuilt = deserialize(spec)
    assert type(rebuilt) is type(obj)
    assert rebuilt.get_config() == obj.get_config()
    assert repr(rebuilt) == repr(obj)


# --------------------------------------------------------------------------------------------
# Optimizers against their published rules, step by step
# --------------------------------------------------------------------------------------------

OPTIMIZER_CASES = [
    (SGD(0.1), naive_sgd, dict(lr=0.1)),
    (SGD(0.1, momentum=0.9), naive_sgd, dict(lr=0.1, momentum=0.9)),
    (SGD(0.1, momentum=0.9, nesterov=True), naive_sgd, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (Adam(0.01, beta_1=0.8, beta_2=0.95, epsilon=1e-6), naive_adam, dict(lr=0.01, beta1=0.8, beta2=0.95, eps=1e-6)),
    (fastnn.AdamW(0.01, beta_1=0.8, beta_2=0.95, epsilon=1e-6, weight_decay=0.2), naive_adamw,
     dict(lr=0.01, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.2)),
    (RMSProp(0.01, rho=0.9, epsilon=1e-6), naive_rmsprop, dict(lr=0.01, alpha=0.9, eps=1e-6)),
    (AdaGrad(0.1, epsilon=1e-10, initial_accumulator_value=0.5), naive_adagrad,
     dict(lr=0.1, eps=1e-10, initial_accumulator_value=0.5)),
]


@pytest.mark.parametrize("opt, naive, hyper", OPTIMIZER_CASES, ids=[repr(c[0]) for c in OPTIMIZER_CASES])
def test_optimizer_step_follows_the_published_rule(opt, naive, hyper):
    rng = np.random.default_rng(0)
    p = rng.normal(size=50)
    expected = p.copy()
    s1 = np.full(50, opt.initial_state)
    s2 = np.zeros(50)
    state = {}
    for step in range(1, 6):
        g = rng.normal(size=50)
        opt.step(p, g, s1, s2, step)
        expected = naive(expected, g, state, **hyper)
        np.testing.assert_allclose(p, expected, rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------------------------
# Initializers
# --------------------------------------------------------------------------------------------

FAN_IN, FAN_OUT = 400, 300
GLOROT_LIMIT = np.sqrt(6 / (FAN_IN + FAN_OUT))
HE_LIMIT = np.sqrt(6 / FAN_IN)

INITIALIZER_CASES = [
    # initializer, expected mean, expected std, (low, high) bounds or None
    (GlorotUniform(), 0.0, GLOROT_LIMIT / np.sqrt(3), (-GLOROT_LIMIT, GLOROT_LIMIT)),
    (GlorotNormal(), 0.0, np.sqrt(2 / (FAN_IN + FAN_OUT)), None),
    (HeUniform(), 0.0, HE_LIMIT / np.sqrt(3), (-HE_LIMIT, HE_LIMIT)),
    (HeNormal(), 0.0, np.sqrt(2 / FAN_IN), None),
    (Normal(mean=1.0, std=2.0), 1.0, 2.0, None),
    (Normal(), 0.0, 0.05, None),
    (Uniform(), 0.0, 2 / np.sqrt(12), (-1.0, 1.0)),
    (Uniform(low=2.0, high=5.0), 3.5, 3 / np.sqrt(12), (2.0, 5.0)),
]


@pytest.mark.parametrize("init, mean, std, bounds", INITIALIZER_CASES, ids=[repr(c[0]) for c in INITIALIZER_CASES])
def test_initializer_statistics(init, mean, std, bounds):
    w = init((FAN_IN, FAN_OUT), np.random.default_rng(1), np.float64)
    assert w.shape == (FAN_IN, FAN_OUT) and w.dtype == np.float64
    n = w.size
    # 5 standard errors: the mean's is std/sqrt(n), the std's about std/sqrt(2n).
    assert abs(w.mean() - mean) < 5 * std / np.sqrt(n)
    assert abs(w.std() - std) < 5 * std / np.sqrt(2 * n)
    if bounds is not None:
        low, high = bounds
        assert w.min() >= low and w.max() <= high
        # A uniform draw of 120,000 values reaches within 0.1% of both ends.
        assert w.min() < low + 1e-3 * (high - low) and w.max() > high - 1e-3 * (high - low)


def test_initializer_constants_dtype_and_reproducibility():
    assert np.array_equal(Zeros()((3, 2), None), np.zeros((3, 2)))
    assert np.array_equal(Ones()((4,), None), np.ones(4))
    assert np.array_equal(Constant(0.25)((2, 2), None), np.full((2, 2), 0.25))
    a = GlorotUniform()((5, 7), np.random.default_rng(3), np.float32)
    b = GlorotUniform()((5, 7), np.random.default_rng(3), np.float32)
    assert a.dtype == np.float32 and np.array_equal(a, b)


def test_one_dimensional_fans_are_kerass():
    """For a shape (n,) Keras' compute_fans gives fan_in = fan_out = n."""
    b = HeNormal()((100_000,), np.random.default_rng(0), np.float64)
    assert abs(b.std() - np.sqrt(2 / 100_000)) < 0.02 * np.sqrt(2 / 100_000)
    b = GlorotUniform()((1000,), np.random.default_rng(0), np.float64)
    assert np.abs(b).max() <= np.sqrt(6 / 2000)


def test_dense_kernel_is_glorot_uniform_and_bias_zero_in_a_model():
    model = fastnn.MLP([Dense(FAN_IN, FAN_OUT)], seed=0)
    w, b = model.get_weights()
    assert np.abs(w).max() <= GLOROT_LIMIT * (1 + 1e-6)
    assert abs(w.std() - GLOROT_LIMIT / np.sqrt(3)) < 0.01 * GLOROT_LIMIT
    assert np.array_equal(b, np.zeros(FAN_OUT, np.float32))


def test_dense_initializers_by_name():
    model = fastnn.MLP([Dense(3, 4, kernel_initializer="ones", bias_initializer=Constant(0.5))])
    w, b = model.get_weights()
    assert np.array_equal(w, np.ones((3, 4))) and np.array_equal(b, np.full(4, 0.5))


# --------------------------------------------------------------------------------------------
# Activation and loss objects
# --------------------------------------------------------------------------------------------

ACTIVATION_CASES = [(Identity(), "identity", 0.0), (Sigmoid(), "sigmoid", 0.0), (Tanh(), "tanh", 0.0),
                    (ReLU(), "relu", 0.0), (LeakyReLU(0.1), "leaky_relu", 0.1), (ELU(0.7), "elu", 0.7),
                    (Softmax(), "softmax", 0.0)]


@pytest.mark.parametrize("act, name, alpha", ACTIVATION_CASES, ids=[c[1] for c in ACTIVATION_CASES])
def test_activation_object_forward_and_backward(act, name, alpha):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4))
    x[np.abs(x) < 1e-3] = 0.5  # keep finite differences away from the kinks at 0
    out = act(x)
    np.testing.assert_allclose(out, naive_activation(name, x, alpha), rtol=1e-12, atol=1e-15)
    dout = rng.normal(size=x.shape)
    expected = central_difference(lambda z: np.sum(naive_activation(name, z, alpha) * dout), x.copy())
    np.testing.assert_allclose(act.backward(dout, out), expected, rtol=1e-6, atol=1e-8)


def _loss_arrays(name, rng):
    if name in ("cross_entropy", "kl_divergence"):
        return tuple(naive_activation("softmax", rng.normal(size=(6, 4))) for _ in range(2))
    if name == "binary_crossentropy":
        return rng.uniform(0.05, 0.95, size=(6, 3)), rng.uniform(0, 1, size=(6, 3))
    if name in ("mape", "msle"):
        return rng.uniform(0.5, 2, size=(6, 3)), rng.uniform(0.5, 2, size=(6, 3))
    return rng.normal(size=(6, 3)), rng.normal(size=(6, 3))


@pytest.mark.parametrize("name", ["mse", "sse", "mae", "mape", "msle", "cosine_similarity", "cross_entropy",
                                  "binary_crossentropy", "kl_divergence"])
def test_loss_object_value_and_gradient(name):
    loss = fastnn.losses.get(name)
    p, t = _loss_arrays(name, np.random.default_rng(2))
    assert loss(p, t) == pytest.approx(naive_loss(name, p, t), rel=1e-12)
    expected = central_difference(lambda q: naive_loss(name, q, t), p.copy())
    np.testing.assert_allclose(loss.gradient(p, t), expected, rtol=1e-6, atol=1e-9)


def test_cross_entropy_object_takes_class_labels():
    p = naive_activation("softmax", np.random.default_rng(0).normal(size=(4, 3)))
    labels = np.array([0, 2, 1, 2])
    assert CrossEntropy()(p, labels) == pytest.approx(-np.mean(np.log(p[np.arange(4), labels])), rel=1e-12)


def test_perceptron_criterion_object():
    p = np.array([[1.0], [0.0], [1.0], [1.0]])
    t = np.array([[1.0], [1.0], [0.0], [1.0]])
    loss = fastnn.PerceptronCriterion()
    assert loss(p, t) == 0.5
    np.testing.assert_array_equal(loss.gradient(p, t), p - t)
