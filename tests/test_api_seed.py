"""The seed framework's API, as its tutorial writes it, with the imports pointed at fastnn:
the MNIST classifier of "Code: Training a Classifier" (Adam's learningRate 0.001) reaching
97% test accuracy, the tutorial's smaller snippets, and ``python -m fastnn``.

The MNIST test reads the folder named by the environment variable FASTNN_DATA (holding
``mnist/*-ubyte.gz``) and is skipped without it. References: the tutorial's formulas
(``naive_seed_forward``: sigma(W2 sigma(W1 x + b1) + b2)) and the classifier's own evaluate.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
SEED_METRICS = ["train_loss", "test_loss", "train_accuracy", "test_accuracy"]


def naive_sigmoid(z):
    return 1 / (1 + np.exp(-z))


def naive_seed_forward(weights, x):
    """The tutorial's prediction with Dense's default Sigmoid on both layers, in float64."""
    W1, b1, W2, b2 = (np.asarray(w, np.float64) for w in weights)
    return naive_sigmoid(naive_sigmoid(x @ W1 + b1) @ W2 + b2)


def _has_mnist():
    root = os.environ.get("FASTNN_DATA")
    return bool(root) and all((Path(root, "mnist", name)).is_file() for name in MNIST_FILES)


requires_mnist = pytest.mark.skipif(
    not _has_mnist(), reason="MNIST files not found: set FASTNN_DATA to a folder holding mnist/*-ubyte.gz")


@requires_mnist
@pytest.mark.slow  # ten epochs of full MNIST
def test_seed_mnist_classifier_reaches_97_percent():
    from fastnn import MLP
    from fastnn import Dense
    from fastnn import ReLU, Softmax
    from fastnn import CrossEntropy
    from fastnn import Dataset
    from fastnn import Adam

    # One BLAS thread: on cores shared with other processes, a multithreaded BLAS busy-waits
    # on these small per-batch products and training runs tens of times slower. The result
    # asserted here does not depend on it. The limit reaches only BLAS libraries already
    # loaded: first load SciPy's, the one that Numba's np.dot calls.
    import scipy.linalg.cython_blas  # noqa: F401
    with threadpool_limits(limits=1, user_api="blas"):
        dataset = Dataset(name = "mnist", train_size = 60000, test_size = 10000, batch_size = 50)
        # The tutorial's MLP() with a seed: unseeded, the final test accuracy varies from run to
        # run (0.9705 to 0.9792 in nine runs), so the 0.97 threshold would fail now and then.
        classifier = MLP(seed = 0)
        optimizer = Adam(learningRate = 0.001)
        classifier.addLayer(Dense(inputDim = 28 * 28, outputDim = 100, activation = ReLU(), optimizer = optimizer))
        classifier.addLayer(Dense(inputDim = 100, outputDim = 50, activation = ReLU(), optimizer = optimizer))
        classifier.addLayer(Dense(inputDim = 50, outputDim = 10, activation = Softmax(), optimizer = optimizer))
        history = classifier.train(dataset,loss = CrossEntropy(), epochs = 10, metrics = ["train_loss", "test_loss", "train_accuracy", "test_accuracy"], tensorboard = False, callbacks = {})  # noqa: E501
        test_loss, test_accuracy = classifier.evaluate(dataset.x_test, dataset.y_test)

    assert (len(dataset.x_train), len(dataset.x_test)) == (60000, 10000)
    assert list(history.history) == SEED_METRICS
    assert all(len(values) == 10 for values in history.history.values())
    assert history.history["test_accuracy"][-1] >= 0.97
    # The test figures are the classifier's on the test rows after the last epoch.
    assert history.history["test_loss"][-1] == pytest.approx(test_loss, rel=1e-12)
    assert history.history["test_accuracy"][-1] == test_accuracy
    assert history.history["train_loss"][-1] < 0.5 * history.history["train_loss"][0]
    assert history.history["train_accuracy"][-1] > 0.97
    assert classifier.optimizers() == [optimizer]


def test_seed_training_call_on_the_bundled_digits():
    """The same calls on the 8x8 digits: the history holds exactly the metrics asked for."""
    from fastnn import MLP, Adam, CrossEntropy, Dataset, Dense, ReLU, Softmax

    dataset = Dataset(name="digits", batch_size=50, seed=0)
    classifier = MLP(seed=0)
    optimizer = Adam(learningRate=0.01)
    classifier.addLayer(Dense(inputDim=64, outputDim=32, activation=ReLU(), optimizer=optimizer))
    classifier.addLayer(Dense(inputDim=32, outputDim=10, activation=Softmax(), optimizer=optimizer))
    history = classifier.train(dataset, loss=CrossEntropy(), epochs=10, metrics=SEED_METRICS, tensorboard=False,
                               callbacks={}, verbose=0)
    assert list(history.history) == SEED_METRICS
    assert all(len(values) == 10 for values in history.history.values())
    assert history.history["train_accuracy"][-1] > 0.97
    assert history.history["test_accuracy"][-1] > 0.85  # the last 300 digits, the usual hold-out, are harder
    assert classifier.evaluate(dataset.x_test, dataset.y_test)[1] == history.history["test_accuracy"][-1]
    history = classifier.train(dataset, loss=CrossEntropy(), epochs=2, metrics=["test_accuracy"], verbose=0)
    assert list(history.history) == ["test_accuracy"] and len(history.history["test_accuracy"]) == 2


def test_seed_training_call_prints_the_names_its_history_holds(capsys):
    """Was: each epoch line printed fit's ``loss``/``val_loss`` while History held ``train_loss``/``test_loss``."""
    from fastnn import MLP, CrossEntropy, Dataset, Dense, Softmax

    dataset = Dataset(name="digits", train_size=200, test_size=100, batch_size=50, seed=0)
    classifier = MLP(seed=0)
    classifier.addLayer(Dense(inputDim=64, outputDim=10, activation=Softmax()))
    metrics = ["train_loss", "test_loss", "test_accuracy"]
    history = classifier.train(dataset, loss=CrossEntropy(), epochs=2, metrics=metrics, verbose=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch ")]
    assert len(lines) == 2
    for epoch, line in enumerate(lines):
        figures = dict(part.split(": ") for part in line.split(" - ")[3:])
        assert list(figures) == metrics  # in History's order; fit's val_accuracy etc. not asked for
        for name in metrics:
            assert float(figures[name]) == pytest.approx(history.history[name][epoch], abs=5e-5)


def test_seed_network_of_the_introduction():
    """``nn.addLayer(Dense(inputDim = 3, outputDim = 4))``: Sigmoid by default, Adam by default."""
    from fastnn import MLP, Adam, Dense, Sigmoid

    nn = MLP(seed=0)
    nn.addLayer(Dense(inputDim = 3, outputDim = 4))
    nn.addLayer(Dense(inputDim = 4, outputDim = 2))
    assert all(isinstance(layer.activation, Sigmoid) for layer in nn.layers)
    (default,) = nn.optimizers()
    assert isinstance(default, Adam) and default.learning_rate == 0.001
    x = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_allclose(nn.predict(x), naive_seed_forward(nn.get_weights(), x), rtol=1e-5)


def test_seed_snippets():
    from fastnn import (SGD, Adam, CrossEntropy, Dense, Identity, LeakyReLU, MSE, ReLU, Sigmoid, Softmax, Tanh)

    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]])
    np.testing.assert_array_equal(Identity()(x), x)
    np.testing.assert_allclose(Sigmoid()(x), naive_sigmoid(x), rtol=1e-12)
    np.testing.assert_allclose(Tanh()(x), np.tanh(x), rtol=1e-12)
    np.testing.assert_array_equal(ReLU()(x), [[0, 0, 0, 0.5, 3.0]])
    np.testing.assert_allclose(LeakyReLU(epsilon = 0.01)(x), [[-0.02, -0.005, 0, 0.5, 3.0]], rtol=1e-12)
    e = np.exp(x - x.max())
    np.testing.assert_allclose(Softmax()(x), e / e.sum(), rtol=1e-12)

    assert MSE()([[1.0, 2.0]], [[0.0, 0.0]]) == 2.5  # PyTorch's mean over elements
    assert CrossEntropy()([[0.25, 0.75]], [1]) == pytest.approx(-np.log(0.75), rel=1e-12)

    optimizer = SGD(learningRate = 0.01, momentum = 0)
    assert (optimizer.learning_rate, optimizer.momentum) == (0.01, 0.0)
    optimizer = Adam(learningRate = 0.001, beta_1 = 0.9, beta_2 = 0.999)
    assert (optimizer.learning_rate, optimizer.beta_1, optimizer.beta_2) == (0.001, 0.9, 0.999)
    denseLayer = Dense(inputDim = 3, outputDim = 4, activation = ReLU())
    assert (denseLayer.input_dim, denseLayer.output_dim) == (3, 4) and isinstance(denseLayer.activation, ReLU)
    denseLayer = Dense(inputDim = 3, outputDim = 4, optimizer = SGD(learningRate = 0.01))
    assert isinstance(denseLayer.optimizer, SGD) and denseLayer.optimizer.learning_rate == 0.01


EPOCH_LINE = re.compile(r"^Epoch (\d)/2 - [\d.]+s - [\d,]+ samples/s - train_loss: [\d.]+ - test_loss: [\d.]+ - "
                        r"train_accuracy: [\d.]+ - test_accuracy: [\d.]+$")


@pytest.mark.slow  # a child process that compiles and trains (.ci/run's first step runs python -m fastnn too)
def test_python_m_fastnn_runs_and_reports_samples_per_second():
    result = subprocess.run([sys.executable, "-m", "fastnn", "--dataset", "digits", "--epochs", "2"],
                            capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Dataset(name='digits', train=1497") and "test=300" in lines[0]
    epochs = [EPOCH_LINE.match(line) for line in lines if line.startswith("Epoch")]
    assert [m.group(1) for m in epochs if m] == ["1", "2"], result.stdout
    final = re.search(r"^final test accuracy: ([\d.]+)$", result.stdout, re.MULTILINE)
    assert final and 0.5 < float(final.group(1)) <= 1.0
    assert "Total params: 12,060" in result.stdout  # 64*100+100 + 100*50+50 + 50*10+10
