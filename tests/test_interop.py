"""fastnn.interop: to_torch and from_torch give the same outputs, both ways, for every layer
kind and activation that has a PyTorch module."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastnn  # noqa: E402
from fastnn import MLP, Activation, BatchNormalization, Dense, Dropout, Input  # noqa: E402
from fastnn.interop import from_torch, to_torch  # noqa: E402
from helpers import randomize_weights  # noqa: E402


def model_of(dtype="float32"):
    """Every kind: Dense with each activation, a bare Activation, Dropout, BatchNorm with
    running statistics moved (``randomize_weights``)."""
    model = MLP([Input(6), Dense(output_dim=8, activation="relu"), BatchNormalization(), Dropout(0.3),
                 Dense(8, 7, activation=fastnn.LeakyReLU(0.2)), Dense(7, 6, activation=fastnn.ELU(0.7)),
                 Dense(6, 5, activation="tanh"), Dense(5, 5, activation="sigmoid"), Dense(5, 4, activation=None),
                 Activation("softmax")], seed=0, dtype=dtype)
    randomize_weights(model)
    return model, np.random.default_rng(0).normal(size=(64, 6)).astype(dtype)


# float64 with -m slow: the same export, and a model of its own to compile.
@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_to_torch_computes_predict(dtype):
    model, x = model_of(dtype)
    net = to_torch(model).eval()
    with torch.no_grad():
        out = net(torch.from_numpy(x)).numpy()
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out, model.predict(x), rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-6)
    assert isinstance(net[0], torch.nn.Linear) and isinstance(net[2], torch.nn.BatchNorm1d)
    assert net[2].momentum == 0.1 and net[3].p == 0.3


def test_from_torch_round_trip_and_a_torch_built_network():
    model, x = model_of()
    back = from_torch(to_torch(model))
    np.testing.assert_allclose(back.predict(x), model.predict(x), rtol=1e-6, atol=1e-7)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.BatchNorm1d(9, momentum=0.2),
                              torch.nn.Dropout(0.1), torch.nn.Linear(9, 3), torch.nn.Softmax(dim=1))
    net.train()
    with torch.no_grad():
        net(torch.randn(32, 6))  # moves the running statistics
    net.eval()
    ours = from_torch(net)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours.predict(x), expected, rtol=1e-5, atol=1e-6)
    ours.compile("cross_entropy", "adam")
    ours.fit(x, np.zeros(64, int), epochs=1, verbose=0)  # and it trains


@pytest.mark.parametrize("module, match", [
    (lambda nn: nn.Sequential(nn.Linear(3, 2), nn.GELU()), "GELU"),
    (lambda nn: nn.Sequential(nn.Linear(3, 2), nn.Softmax(dim=0)), "dim=0"),
    (lambda nn: nn.Sequential(nn.ReLU()), "at least one nn.Linear"),
    (lambda nn: nn.Sequential(nn.BatchNorm1d(3, affine=False)), "affine=True"),
])
def test_from_torch_refuses_what_it_cannot_express(module, match):
    with pytest.raises(ValueError, match=match):
        from_torch(module(torch.nn))


def test_bad_arguments():
    with pytest.raises(TypeError, match="torch.nn.Sequential"):
        from_torch(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="fastnn MLP"):
        to_torch("model")
    step = MLP([Dense(2, 1, activation=fastnn.Heaviside())])
    with pytest.raises(ValueError, match="Heaviside has no PyTorch module"):
        to_torch(step)
