"""Bad input: every public entry point rejects it with a ValueError or TypeError whose message
names the argument, before any kernel runs (the kernels do no bounds checks: a label of 10 in
a 10-class problem would write past an array's end). A loss that turns NaN or infinite during
training stops it with a FloatingPointError.

The fixture ``no_kernels`` replaces the network kernels with a function that fails the test,
so each rejection is shown to happen before any of them is called.
"""
import numpy as np
import pytest

import fastnn
from fastnn import (ELU, MLP, SGD, AdaGrad, Adam, Dense, EarlyStopping, Input, LambdaCallback, LeakyReLU,
                    LearningRateScheduler, RMSProp)
from fastnn.kernels import inference, network

ROWS, IN, OUT = 10, 3, 4
X = np.random.default_rng(0).normal(size=(ROWS, IN)).astype(np.float32)
LABELS = np.arange(ROWS) % OUT


@pytest.fixture
def no_kernels(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a kernel ran before the bad input was rejected")
    monkeypatch.setattr(network, "train_batches", forbidden)
    for name in ("predict_batches", "evaluate_batches"):
        monkeypatch.setattr(inference, name, forbidden)


@pytest.fixture
def model():
    """A compiled 3-5-4 softmax classifier, built (weights exist) before any kernel is forbidden."""
    m = MLP([Dense(IN, 5, activation="relu"), Dense(5, OUT, activation="softmax")], seed=0)
    m.compile("cross_entropy", Adam(), metrics=["accuracy"])
    m.get_weights()
    return m


def with_value(array, index, value):
    out = np.array(array, dtype=np.float64)
    out[index] = value
    return out


def one_hot(labels):
    return np.eye(OUT)[labels]


# Each case: id, call on the model, exception type, regular expression the message must match.
MODEL_CASES = [
    # shapes and widths
    ("x-width", lambda m: m.fit(np.zeros((ROWS, IN + 1)), LABELS), ValueError, r"x must have 3 features"),
    ("x-images-width", lambda m: m.fit(np.zeros((ROWS, 2, 2)), LABELS), ValueError, r"x must have 3 features"),
    ("x-scalar", lambda m: m.fit(5.0, LABELS), ValueError, r"x must be a 2-D array"),
    ("y-columns", lambda m: m.fit(X, np.zeros((ROWS, OUT - 1))), ValueError, r"y must have 4 columns"),
    ("y-scalar", lambda m: m.fit(X, 1), ValueError, r"y must be an array"),
    ("x-y-length", lambda m: m.fit(X, LABELS[:-1]), ValueError, r"y has 9 rows but x has 10"),
    ("x-y-length-one-hot", lambda m: m.fit(X[:-2], one_hot(LABELS)), ValueError, r"y has 10 rows but x has 8"),
    # labels
    ("label-negative", lambda m: m.fit(X, with_value(LABELS, 3, -1).astype(int)), ValueError,
     r"y holds class label -1, outside \[0, 4\)"),
    ("label-equal-classes", lambda m: m.fit(X, with_value(LABELS, 3, OUT).astype(int)), ValueError,
     r"y holds class label 4, outside \[0, 4\)"),
    ("label-huge", lambda m: m.fit(X, with_value(LABELS, 0, 10 ** 9).astype(int)), ValueError, r"y holds class label"),
    ("label-fraction", lambda m: m.fit(X, with_value(LABELS, 0, 0.5)), ValueError, r"y looks like class labels"),
    # non-finite values
    ("x-nan", lambda m: m.fit(with_value(X, (2, 1), np.nan), LABELS), ValueError, r"x contains NaN or infinite"),
    ("x-inf", lambda m: m.fit(with_value(X, (0, 0), np.inf), LABELS), ValueError, r"x contains NaN or infinite"),
    ("x-overflows-float32", lambda m: m.fit(with_value(X, (0, 0), 1e300), LABELS), ValueError,
     r"x contains NaN or infinite values \(or values beyond float32's range\)"),
    ("y-nan-one-hot", lambda m: m.fit(X, with_value(one_hot(LABELS), (1, 1), np.nan)), ValueError,
     r"y contains NaN or infinite"),
    ("y-inf-one-hot", lambda m: m.fit(X, with_value(one_hot(LABELS), (1, 1), -np.inf)), ValueError,
     r"y contains NaN or infinite"),
    ("y-nan-labels", lambda m: m.fit(X, with_value(LABELS, 4, np.nan)), ValueError, r"y contains NaN or infinite"),
    # non-numeric
    ("x-strings", lambda m: m.fit(np.full((ROWS, IN), "a"), LABELS), TypeError, r"x must hold real numbers"),
    ("x-str", lambda m: m.fit("abc", LABELS), TypeError, r"x must be a numeric array"),
    ("x-none", lambda m: m.fit(None, LABELS), TypeError, r"x must be a numeric array"),
    ("x-objects", lambda m: m.fit([[1.0, None, 2.0]] * ROWS, LABELS), TypeError, r"x must hold real numbers"),
    ("x-complex", lambda m: m.fit(X + 1j, LABELS), TypeError, r"x must hold real numbers"),
    ("x-ragged", lambda m: m.fit([[1.0, 2.0, 3.0], [1.0]], [0, 1]), ValueError, r"x must be a rectangular"),
    ("y-strings", lambda m: m.fit(X, np.array(["a"] * ROWS)), TypeError, r"y must hold real numbers"),
    ("y-none", lambda m: m.fit(X, None), TypeError, r"y must be a numeric array"),
    ("y-objects", lambda m: m.fit(X, np.array([0, None] * 5, dtype=object)), TypeError, r"y must hold real numbers"),
    # empty data
    ("x-empty", lambda m: m.fit(np.zeros((0, IN)), LABELS[:0]), ValueError, r"x is empty"),
    ("x-empty-list", lambda m: m.fit([], []), ValueError, r"x is empty"),
    ("x-no-features", lambda m: m.fit(np.zeros((ROWS, 0)), LABELS), ValueError, r"x has zero features"),
    # hyper-parameters of fit
    ("batch-size-zero", lambda m: m.fit(X, LABELS, batch_size=0), ValueError, r"batch_size must be >= 1"),
    ("batch-size-negative", lambda m: m.fit(X, LABELS, batch_size=-4), ValueError, r"batch_size must be >= 1"),
    ("batch-size-float", lambda m: m.fit(X, LABELS, batch_size=2.5), TypeError, r"batch_size must be an integer"),
    ("batch-size-str", lambda m: m.fit(X, LABELS, batch_size="32"), TypeError, r"batch_size must be an integer"),
    ("batch-size-bool", lambda m: m.fit(X, LABELS, batch_size=True), TypeError, r"batch_size must be an integer"),
    ("epochs-negative", lambda m: m.fit(X, LABELS, epochs=-1), ValueError, r"epochs must be >= 0"),
    ("epochs-float", lambda m: m.fit(X, LABELS, epochs=1.5), TypeError, r"epochs must be an integer"),
    ("initial-epoch", lambda m: m.fit(X, LABELS, initial_epoch=-1), ValueError, r"initial_epoch"),
    ("verbose", lambda m: m.fit(X, LABELS, verbose=3), ValueError, r"verbose must be <= 2"),
    ("split-negative", lambda m: m.fit(X, LABELS, validation_split=-0.1), ValueError, r"validation_split must be >="),
    ("split-one", lambda m: m.fit(X, LABELS, validation_split=1.0), ValueError, r"validation_split must be < 1"),
    ("split-nan", lambda m: m.fit(X, LABELS, validation_split=np.nan), ValueError, r"validation_split must be finite"),
    ("split-str", lambda m: m.fit(X, LABELS, validation_split="0.2"), TypeError, r"validation_split must be a real"),
    ("split-empties-a-side", lambda m: m.fit(X, LABELS, validation_split=0.01), ValueError,
     r"validation_split=0.01 leaves an empty"),
    ("validation-data-shape", lambda m: m.fit(X, LABELS, validation_data=(X,)), ValueError, r"validation_data must be"),
    ("validation-data-width", lambda m: m.fit(X, LABELS, validation_data=(X[:, :2], LABELS)), ValueError,
     r"validation_data x must have 3 features"),
    ("validation-data-label", lambda m: m.fit(X, LABELS, validation_data=(X, LABELS + 1)), ValueError,
     r"validation_data y holds class label 4"),
    ("callbacks", lambda m: m.fit(X, LABELS, callbacks=[lambda epoch: None]), TypeError, r"callbacks must be"),
    ("learning-rate-made-negative", lambda m: (setattr(m.optimizer, "learning_rate", -0.1), m.fit(X, LABELS)),
     ValueError, r"learning_rate must be >= 0"),
    # the other entry points
    ("predict-width", lambda m: m.predict(np.zeros((2, IN + 2))), ValueError, r"x must have 3 features"),
    # (predict's NaN check is inside its compiled pass, a batch at a time: a NaN corrupts no state
    # there; tests/test_predictor.py checks it names the row.)
    ("predict-strings", lambda m: m.predict([["a", "b", "c"]]), TypeError, r"x must hold real numbers"),
    ("predict-empty", lambda m: m.predict(np.zeros((0, IN))), ValueError, r"x is empty"),
    ("predict-batch-size", lambda m: m.predict(X, batch_size=0), ValueError, r"batch_size must be >= 1"),
    ("evaluate-label", lambda m: m.evaluate(X, LABELS + 1), ValueError, r"y holds class label 4"),
    ("evaluate-length", lambda m: m.evaluate(X, LABELS[:3]), ValueError, r"y has 3 rows but x has 10"),
    ("evaluate-batch-size", lambda m: m.evaluate(X, LABELS, batch_size=-1), ValueError, r"batch_size must be >= 1"),
    ("train-on-batch-inf", lambda m: m.train_on_batch(with_value(X, (1, 1), np.inf), LABELS), ValueError,
     r"x contains NaN"),
    ("train-on-batch-label", lambda m: m.train_on_batch(X, -LABELS - 1), ValueError, r"y holds class label -1"),
    # weights
    ("set-weights-count", lambda m: m.set_weights(m.get_weights()[:3]), ValueError, r"weights must hold 4 arrays"),
    ("set-weights-shape", lambda m: m.set_weights([w.T for w in m.get_weights()]), ValueError,
     r"weights\[0\] must have shape \(3, 5\), got \(5, 3\)"),
    ("set-weights-nan", lambda m: m.set_weights([with_value(w, 0, np.nan) for w in m.get_weights()]), ValueError,
     r"weights\[0\] contains NaN"),
    ("set-weights-inf-bias", lambda m: m.set_weights(m.get_weights()[:3] + [np.full(OUT, np.inf)]), ValueError,
     r"weights\[3\] contains NaN or infinite"),
    ("set-weights-array", lambda m: m.set_weights(np.zeros(4)), TypeError, r"weights must be a list"),
    ("set-weights-strings", lambda m: m.set_weights([np.full((3, 5), "a")] + m.get_weights()[1:]), TypeError,
     r"weights\[0\] must hold real numbers"),
    ("layer-set-weights-shape", lambda m: m.layers[1].set_weights([np.zeros((5, 3)), np.zeros(OUT)]), ValueError,
     r"weights\[0\] must have shape \(5, 4\)"),
    ("layer-set-weights-count", lambda m: m.layers[1].set_weights([np.zeros((5, 4))]), ValueError,
     r"weights must hold 2 arrays"),
    # compile and train
    ("unknown-loss", lambda m: m.compile(loss="hinge"), ValueError, r"loss must be a Loss or one of"),
    ("loss-not-a-loss", lambda m: m.compile(loss=42), ValueError, r"loss must be a Loss"),
    ("unknown-optimizer", lambda m: m.compile(loss="mse", optimizer="lamb"), ValueError, r"optimizer must be"),
    ("unknown-metric", lambda m: m.compile(loss="mse", metrics=["precision"]), ValueError,
     r"metric 'precision' does not fit a regression model"),
    ("train-unknown-metric", lambda m: m.train(fastnn.Dataset("digits"), metrics=["val_loss"]), ValueError,
     r"'train_<metric>' or 'test_<metric>'"),
    ("to-device", lambda m: m.to("tpu"), ValueError, r"device must be 'cpu' or 'cuda'"),
]


@pytest.mark.parametrize("call, exc, match", [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES])
def test_model_entry_points_reject_bad_input_before_any_kernel(model, no_kernels, call, exc, match):
    before = model.get_weights()
    loss, optimizer = model.loss, model.optimizer
    with pytest.raises(exc, match=match):
        call(model)
    after = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert model.loss is loss and model.optimizer is optimizer  # a failed compile changes nothing


def test_fit_before_compile_and_without_layers(no_kernels):
    with pytest.raises(ValueError, match=r"compile\(loss=\.\.\.\) before fit"):
        MLP([Dense(IN, OUT)]).fit(X, LABELS)
    with pytest.raises(ValueError, match=r"compile\(loss=\.\.\.\) before evaluate"):
        MLP([Dense(IN, OUT)]).evaluate(X, LABELS)
    with pytest.raises(ValueError, match=r"no layers"):
        MLP().compile("mse").fit(X, LABELS)
    with pytest.raises(ValueError, match=r"no layers"):
        MLP().predict(X)


def test_binary_cross_entropy_targets_outside_unit_interval(no_kernels):
    model = MLP([Dense(IN, 1, activation="sigmoid")], seed=0).compile("binary_crossentropy")
    for bad in (1.5, -0.5):
        y = with_value(np.zeros(ROWS), 2, bad)
        with pytest.raises(ValueError, match=r"y must lie in \[0, 1\] for this loss"):
            model.fit(X, y)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 1\]"):
        fastnn.Perceptron(input_dim=IN).fit(X, np.full(ROWS, 2.0))


def test_width_mismatch_between_layers():
    with pytest.raises(ValueError, match=r"input_dim=4 but the previous layer outputs 5 features"):
        MLP([Dense(IN, 5), Dense(4, 2)])
    model = MLP([Dense(IN, 5)])
    with pytest.raises(ValueError, match=r"input_dim must match"):
        model.addLayer(Dense(inputDim=6, outputDim=2))
    assert len(model.layers) == 1
    with pytest.raises(ValueError, match=r"first layer needs input_dim"):
        MLP([Dense(output_dim=3)])


CONSTRUCTOR_CASES = [
    ("dense-zero-width", lambda: Dense(IN, 0), ValueError, r"output_dim must be >= 1"),
    ("dense-negative-width", lambda: Dense(IN, -2), ValueError, r"output_dim must be >= 1"),
    ("dense-zero-input", lambda: Dense(0, 3), ValueError, r"input_dim must be >= 1"),
    ("dense-float-width", lambda: Dense(IN, 2.5), TypeError, r"output_dim must be an integer"),
    ("dense-no-width", lambda: Dense(IN), TypeError, r"output_dim"),
    ("dense-activation", lambda: Dense(IN, 2, activation="swish"), ValueError, r"activation must be"),
    ("dense-optimizer", lambda: Dense(IN, 2, optimizer="lamb"), ValueError, r"optimizer must be"),
    ("dense-initializer", lambda: Dense(IN, 2, kernel_initializer="orthogonal"), ValueError,
     r"initializer must be"),
    ("dense-bias-initializer", lambda: Dense(IN, 2, bias_initializer=3), ValueError, r"initializer must be"),
    ("sgd-lr", lambda: SGD(learning_rate=-0.01), ValueError, r"learning_rate must be >= 0"),
    ("adam-lr", lambda: Adam(learningRate=-0.001), ValueError, r"learning_rate must be >= 0"),
    ("rmsprop-lr", lambda: RMSProp(-1.0), ValueError, r"learning_rate must be >= 0"),
    ("adagrad-lr", lambda: AdaGrad(learning_rate=-0.1), ValueError, r"learning_rate must be >= 0"),
    ("lr-nan", lambda: Adam(np.nan), ValueError, r"learning_rate must be finite"),
    ("lr-str", lambda: SGD("0.1"), TypeError, r"learning_rate must be a real number"),
    ("sgd-momentum", lambda: SGD(0.1, momentum=1.0), ValueError, r"momentum must be < 1"),
    ("sgd-nesterov", lambda: SGD(0.1, nesterov=True), ValueError, r"nesterov=True needs momentum"),
    ("adam-beta1", lambda: Adam(beta_1=1.0), ValueError, r"beta_1 must be < 1"),
    ("adam-beta2", lambda: Adam(beta_2=-0.1), ValueError, r"beta_2 must be >= 0"),
    ("adam-epsilon", lambda: Adam(epsilon=-1e-8), ValueError, r"epsilon must be > 0"),
    # epsilon 0 turned a never-active unit's weights into NaN (0/0) while loss and outputs stayed finite
    ("adam-epsilon-zero", lambda: Adam(epsilon=0.0), ValueError, r"epsilon must be > 0"),
    ("rmsprop-rho", lambda: RMSProp(rho=1.5), ValueError, r"rho must be"),
    ("adagrad-accumulator", lambda: AdaGrad(initial_accumulator_value=-1), ValueError, r"initial_accumulator_value"),
    ("leaky-relu-alpha", lambda: LeakyReLU(epsilon=2.0), ValueError, r"alpha must be <= 1"),
    ("elu-alpha", lambda: ELU(0.0), ValueError, r"alpha must be > 0"),
    ("dtype-float16", lambda: MLP(dtype="float16"), ValueError, r"dtype must be 'float32' or 'float64'"),
    ("dtype-int", lambda: MLP(dtype=np.int32), ValueError, r"dtype must be"),
    ("dtype-none", lambda: MLP(dtype=None), ValueError, r"dtype must be"),
    ("dtype-object", lambda: MLP(dtype=object()), ValueError, r"dtype must be"),
    ("device", lambda: MLP(device="tpu"), ValueError, r"device must be 'cpu' or 'cuda'"),
    ("seed-negative", lambda: MLP(seed=-1), ValueError, r"seed must be >= 0"),
    ("seed-float", lambda: MLP(seed=1.5), TypeError, r"seed must be an integer"),
    ("add-not-a-layer", lambda: MLP().add("dense"), TypeError, r"layer must be a fastnn layer"),
    ("input-not-first", lambda: MLP([Dense(IN, 2), Input(2)]), ValueError, r"Input must be the first layer"),
    ("input-shape", lambda: Input((28, 0)), ValueError, r"shape must be >= 1"),
    ("early-stopping-patience", lambda: EarlyStopping(patience=-1), ValueError, r"patience must be >= 0"),
    ("early-stopping-mode", lambda: EarlyStopping(mode="up"), ValueError, r"mode must be"),
    ("scheduler", lambda: LearningRateScheduler(0.1), TypeError, r"schedule must be callable"),
    ("lambda-callback", lambda: LambdaCallback(on_epoch_end=3), TypeError, r"on_epoch_end must be callable"),
    ("perceptron-lr", lambda: fastnn.Perceptron(input_dim=2, learning_rate=-1), ValueError, r"learning_rate"),
]


@pytest.mark.parametrize("call, exc, match", [c[1:] for c in CONSTRUCTOR_CASES], ids=[c[0] for c in CONSTRUCTOR_CASES])
def test_constructors_reject_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_a_layer_belongs_to_one_model():
    layer = Dense(IN, 2)
    MLP([layer])
    with pytest.raises(ValueError, match=r"already belongs to a model"):
        MLP([layer])


# --------------------------------------------------------------------------------------------
# Divergence during training
# --------------------------------------------------------------------------------------------

def test_a_diverging_loss_stops_training_with_floating_point_error():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    t = x @ np.array([[1.0], [-2.0], [0.5]])
    model = MLP([Dense(3, 8, activation=None), Dense(8, 1, activation=None)], seed=0).compile("mse", SGD(1e3))
    epochs_done = []
    diverged = r"the loss became (nan|inf) at epoch \d+, batch \d+: training diverged"
    with pytest.raises(FloatingPointError, match=diverged):
        model.fit(x, t, epochs=100, batch_size=8, verbose=0,
                  callbacks=[LambdaCallback(on_epoch_end=lambda epoch, logs: epochs_done.append(epoch))])
    assert len(epochs_done) < 100


def test_train_on_batch_with_overflowing_output_raises_and_skips_the_update():
    model = MLP([Dense(3, 1, activation=None)], seed=0).compile("mse", SGD(0.1))
    model.set_weights([np.full((3, 1), 3e38), np.zeros(1)])  # float32 max is 3.4e38: x @ W overflows
    before = model.get_weights()
    with pytest.raises(FloatingPointError, match=r"the loss is inf: training diverged"):
        model.train_on_batch(np.ones((2, 3)), np.zeros(2))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
