"""Every dispatch on an integer code ends in an error branch: an unknown code raises instead of
falling through to the last real kernel (Numba kernels do no other checks). The CUDA launchers
check the same codes on the host, since device code cannot raise."""
import numpy as np
import pytest

import fastnn
from fastnn.kernels import activations as A
from fastnn.kernels import losses as L
from fastnn.kernels import optimizers as O
from fastnn.kernels import schedules as S
from fastnn.user_losses import loss_kernels
from helpers import cuda_or_skip


def test_unknown_activation_code_raises():
    x = np.full((2, 3), 0.5)
    with pytest.raises(ValueError, match="activation"):
        A.bias_activation_forward(x, x, np.zeros(3), A.HEAVISIDE + 1, 0.0)
    with pytest.raises(ValueError, match="activation"):
        A.activation_backward(x, x, x, -1, 0.0)
    A.bias_activation_forward(x, x, np.zeros(3), A.HEAVISIDE, 0.0)  # the last real code still works
    np.testing.assert_array_equal(x, 1.0)  # heaviside(0.5) = 1


def test_unknown_loss_code_raises():
    pred, target = np.full((2, 3), 0.5), np.full((2, 3), 0.5)
    with pytest.raises(ValueError, match="loss"):
        L.loss_forward(L.PERCEPTRON + 1, pred, target)
    with pytest.raises(ValueError, match="loss"):
        L.loss_backward(L.PERCEPTRON + 1, np.zeros_like(pred), pred, target)
    assert L.loss_forward(L.PERCEPTRON, pred, target) == 0.0


def test_unknown_optimizer_code_raises():
    p = np.ones(4)
    with pytest.raises(ValueError, match="optimizer"):
        O.optimizer_step(O.ADAMW + 1, p, p.copy(), np.zeros(4), np.zeros(4), np.full(O.N_HYPER, 0.1), 1)
    np.testing.assert_array_equal(p, 1.0)


def test_unknown_schedule_code_raises():
    row = np.array([S.COSINE_DECAY + 1, 0.1, 10.0, 0.5, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="schedule"):
        S.learning_rate_at(row, 0, 3)
    row[S.S_KIND] = S.CONSTANT
    assert S.learning_rate_at(row, 0, 3) == 0.1


class _UnknownSchedule(fastnn.ExponentialDecay):
    kind = S.COSINE_DECAY + 1


def test_cuda_refuses_an_unknown_schedule_code_on_the_host():
    cuda_or_skip()
    m = fastnn.MLP([fastnn.Dense(3, 2, activation="softmax")], seed=0, device="cuda", dtype="float32")
    m.compile(loss="cross_entropy", optimizer=fastnn.SGD(_UnknownSchedule(0.1, 10, 0.5)))
    # check_code's message: without the host check the simulator would raise later, from inside the kernel
    with pytest.raises(ValueError, match=rf"unknown learning-rate schedule code {S.COSINE_DECAY + 1} \(valid"):
        m.fit(np.ones((4, 3), np.float32), np.zeros(4, np.int64), epochs=1, batch_size=2, verbose=0)


def test_cuda_launchers_check_codes_on_the_host():
    from fastnn.cuda import check_code
    check_code(3, 3, "loss")
    for bad in (-1, 4):
        with pytest.raises(ValueError, match="unknown loss code"):
            check_code(bad, 3, "loss")


def _last_kind():
    from fastnn.kernels import table
    return max(value for name, value in vars(table).items() if name.endswith("_LAYER"))


_UNKNOWN_KIND = _last_kind() + 1


def _unknown_kind_network(dtype=np.float64):
    """A dense layer, then a row whose kind is one past the last real one."""
    from fastnn.kernels import network as N
    layers = np.array([[0, 6, 2, 3, A.TANH, N.DENSE_LAYER], [0, 0, 3, 3, A.IDENTITY, _UNKNOWN_KIND]], dtype=np.int64)
    return N, layers, np.zeros((2, 2)), np.full(9, 0.1, dtype=dtype)


def test_unknown_layer_kind_raises_in_both_passes():
    """``dispatch.layer_forward`` and ``layer_backward`` end in an error branch: an unknown kind
    is an error in the forward pass and in both walkers' backward pass, not the last real kind."""
    N, layers, alphas, params = _unknown_kind_network()
    x, rows = np.ones((4, 2)), 4
    mse = loss_kernels(L.MSE, x.dtype)
    act_off, n_acts, deltas_shape, n_targets, n_stats = N.workspace_layout(layers, rows)
    work = N.Workspace(np.zeros(n_acts), act_off, np.zeros(deltas_shape), np.zeros(n_targets), np.zeros(n_stats))
    net = N.Network(params, layers, alphas, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="unknown layer kind"):
        N.network_forward(net, x, work, True)
    graph = N.Graph(np.array([[-1, -1], [0, 0]], dtype=np.int64), np.zeros(n_acts))  # row 1 reads node 0 twice
    with pytest.raises(ValueError, match="unknown layer kind"):
        N.graph_backward(net, np.zeros(params.size), x, work, L.MSE, np.zeros((rows, 3)), graph, loss_fns=mse)
    with pytest.raises(ValueError, match="unknown layer kind"):
        N.network_backward(net, np.zeros(params.size), x, work, L.MSE, np.zeros((rows, 3)), loss_fns=mse)
    layers[1, N.KIND] = N.MULTIPLY_LAYER  # the last real kind passes the dispatch (in a graph)
    N.graph_backward(net, np.zeros(params.size), x, work, L.MSE, np.zeros((rows, 3)), graph, loss_fns=mse)


def test_cuda_dispatch_refuses_an_unknown_layer_kind_on_the_host():
    cuda = cuda_or_skip()
    from fastnn.cuda import dispatch as CDS
    N, layers, alphas, params = _unknown_kind_network(np.float32)
    net = N.Network(cuda.to_device(params), layers, alphas, 0)
    buf = cuda.to_device(np.zeros(12, np.float32))
    with pytest.raises(ValueError, match=f"unknown layer kind {_UNKNOWN_KIND} in row 1"):
        CDS.layer_forward(net, 1, buf, buf, buf, None, 4)
    with pytest.raises(ValueError, match=f"unknown layer kind {_UNKNOWN_KIND} in row 1"):
        CDS.layer_backward(net, buf, 1, buf, None, None, buf, buf, buf, buf, None, 4)
