"""Moving models between fastnn and PyTorch: ``to_torch(model)`` and ``from_torch(module)``.

``to_torch`` returns a ``torch.nn.Sequential`` that computes what ``model.predict`` does (in
``eval()`` mode; in ``train()`` mode, what ``model(x, training=True)`` does up to Dropout's
random masks): a ``Dense`` becomes ``nn.Linear`` (weight = W.T: fastnn keeps W as (in, out),
PyTorch as (out, in)) followed by its activation's module, ``Activation`` that module alone,
``Dropout`` ``nn.Dropout``, ``BatchNormalization`` ``nn.BatchNorm1d`` with the same momentum,
epsilon, gamma, beta and running statistics. ``from_torch`` reads such a ``Sequential`` back
(``nn.Linear`` followed by one activation module becomes one ``Dense``), weights included.
Both need PyTorch installed; neither touches PyTorch's global settings.
"""
import numpy as np

from .activations import ELU, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .layers import Activation, BatchNormalization, Dense, Dropout, Input
from .network import Network
from .sequential import MLP


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError("fastnn.interop needs PyTorch: pip install torch") from None
    return torch


def _activation_module(nn, act):
    if act is None or isinstance(act, Identity):
        return None
    simple = {ReLU: nn.ReLU, Sigmoid: nn.Sigmoid, Tanh: nn.Tanh}
    if type(act) in simple:
        return simple[type(act)]()
    if isinstance(act, Softmax):
        return nn.Softmax(dim=1)
    if isinstance(act, LeakyReLU):
        return nn.LeakyReLU(act.alpha)
    if isinstance(act, ELU):
        return nn.ELU(act.alpha)
    raise ValueError(f"{type(act).__name__} has no PyTorch module (Heaviside's step has no gradient to train)")


def to_torch(model):
    """A ``torch.nn.Sequential`` with ``model``'s layers and weights, in ``model``'s dtype, on
    the CPU. Call ``.eval()`` on it for ``predict``'s behaviour (Dropout off, BatchNorm's
    running statistics)."""
    torch = _torch()
    nn = torch.nn
    if not isinstance(model, Network):
        raise TypeError(f"model must be a fastnn MLP, got {type(model).__name__}")
    if model._graph_table() is not None:
        raise ValueError("a functional Model (several inputs or branches) has no export here yet: only a stack of "
                         "layers (MLP/Sequential)")
    model._ensure_built()
    dtype = torch.float64 if np.dtype(model.dtype) == np.float64 else torch.float32
    modules = []
    for layer in model.layers:
        weights = [torch.as_tensor(np.ascontiguousarray(w), dtype=dtype) for w in layer.get_weights()] \
            if layer.count_params() else []
        if isinstance(layer, Input):
            continue
        if isinstance(layer, Dense):
            linear = nn.Linear(layer.input_dim, layer.output_dim, dtype=dtype)
            with torch.no_grad():
                linear.weight.copy_(weights[0].T)
                linear.bias.copy_(weights[1])
            modules.append(linear)
            act = _activation_module(nn, layer.activation)
            if act is not None:
                modules.append(act)
        elif isinstance(layer, Activation):
            act = _activation_module(nn, layer.activation)
            modules.append(act if act is not None else nn.Identity())
        elif isinstance(layer, Dropout):
            modules.append(nn.Dropout(layer.rate))
        elif isinstance(layer, BatchNormalization):
            bn = nn.BatchNorm1d(layer.output_dim, eps=layer.epsilon, momentum=layer.momentum, dtype=dtype)
            with torch.no_grad():
                bn.weight.copy_(weights[0])
                bn.bias.copy_(weights[1])
                bn.running_mean.copy_(weights[2])
                bn.running_var.copy_(weights[3])
            modules.append(bn)
        else:
            raise ValueError(f"{type(layer).__name__} has no PyTorch counterpart in fastnn.interop")
    return nn.Sequential(*modules)


def _activation_from(nn, module):
    if isinstance(module, nn.ReLU):
        return ReLU()
    if isinstance(module, nn.Sigmoid):
        return Sigmoid()
    if isinstance(module, nn.Tanh):
        return Tanh()
    if isinstance(module, nn.Softmax):
        if module.dim not in (1, -1):
            raise ValueError(f"nn.Softmax(dim={module.dim}): fastnn's softmax is over the features (dim=1)")
        return Softmax()
    if isinstance(module, nn.LeakyReLU):
        return LeakyReLU(module.negative_slope)
    if isinstance(module, nn.ELU):
        return ELU(module.alpha)
    if isinstance(module, nn.Identity):
        return Identity()
    return None


def from_torch(module, seed=None):
    """A fastnn ``MLP`` from a ``torch.nn.Sequential`` of ``Linear``, activation modules
    (ReLU, Sigmoid, Tanh, Softmax over dim 1, LeakyReLU, ELU, Identity), ``Dropout`` and
    ``BatchNorm1d``, weights and running statistics included; float64 parameters give a
    float64 model, anything else float32. The model is not compiled: call ``compile``."""
    torch = _torch()
    nn = torch.nn
    if not isinstance(module, nn.Sequential):
        raise TypeError(f"module must be a torch.nn.Sequential, got {type(module).__name__}")
    children = list(module)
    params = list(module.parameters())
    dtype = "float64" if params and params[0].dtype == torch.float64 else "float32"
    layers, weights = [], []
    i = 0
    while i < len(children):
        child = children[i]
        if isinstance(child, nn.Linear):
            act = _activation_from(nn, children[i + 1]) if i + 1 < len(children) else None
            if act is not None:
                i += 1
            layers.append(Dense(child.in_features, child.out_features, activation=act or Identity()))
            w = child.weight.detach().cpu().numpy().T
            b = child.bias.detach().cpu().numpy() if child.bias is not None else np.zeros(child.out_features)
            weights.append([w, b])
        elif isinstance(child, nn.Dropout):
            layers.append(Dropout(child.p))
            weights.append([])
        elif isinstance(child, nn.BatchNorm1d):
            if not child.affine or not child.track_running_stats or child.momentum is None:
                raise ValueError("nn.BatchNorm1d needs affine=True, track_running_stats=True and a momentum")
            layers.append(BatchNormalization(child.num_features, momentum=child.momentum, epsilon=child.eps))
            weights.append([t.detach().cpu().numpy() for t in (child.weight, child.bias, child.running_mean,
                                                               child.running_var)])
        else:
            act = _activation_from(nn, child)
            if act is None:
                raise ValueError(f"module {i} ({type(child).__name__}) has no fastnn layer: Sequential of Linear, "
                                 "activations, Dropout and BatchNorm1d only")
            layers.append(Activation(act))
            weights.append([])
        i += 1
    first = next((layer for layer in layers if isinstance(layer, (Dense, BatchNormalization))), None)
    if first is None:
        raise ValueError("module needs at least one nn.Linear or nn.BatchNorm1d, which give the input width")
    width = first.input_dim if isinstance(first, Dense) else first.output_dim
    model = MLP([Input(width)] + layers, seed=seed, dtype=dtype)
    for layer, arrays in zip(layers, weights):
        if arrays:
            layer.set_weights(arrays)
    return model

