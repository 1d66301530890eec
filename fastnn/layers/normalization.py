"""The normalization layers: BatchNormalization (alias BatchNorm), LayerNormalization."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import optimizers
from ..kernels.layernorm import CENTER, SCALE
from ..kernels.table import B_OFF, BATCHNORM_LAYER, KIND, LAYERNORM_LAYER, W_OFF
from ..validation import check_float, check_int
from .base import Layer

__all__ = ["BatchNorm", "BatchNormalization", "LayerNormalization"]  # what ``fastnn`` and ``fastnn.layers`` export


class _Normalization(Layer):
    """What the normalization layers share: as many outputs as inputs, and their own optimizer."""

    def _features(self, input_dim, optimizer):
        self.input_dim = None if input_dim is None else check_int(input_dim, "input_dim", minimum=1)
        self.optimizer = None if optimizer is None else optimizers.get(optimizer)
        if self.input_dim is not None:
            self.output_dim = self.input_dim

    def connect(self, input_dim):
        super().connect(input_dim)
        self.output_dim = self.input_dim


class BatchNormalization(_Normalization):
    """Batch normalization over the features, as ``torch.nn.BatchNorm1d(num_features, eps=epsilon,
    momentum=momentum)`` (Ioffe & Szegedy, 2015).

    In training each feature is normalized with the batch's mean and biased variance, then
    scaled by gamma and shifted by beta (both trained by the layer's optimizer, initially 1 and
    0), and the running statistics move as running = (1 - momentum) * running + momentum *
    batch, with the unbiased variance (PyTorch's convention; Keras' ``momentum`` is 1 minus
    this one). At inference (``predict``, ``evaluate``, validation) the running mean and
    variance (initially 0 and 1) are used instead. ``model(x, training=True)`` normalizes with
    the batch and updates the running statistics, as in Keras and PyTorch. ``get_weights()``
    returns [gamma, beta, running_mean, running_var]. ``epsilon`` keeps a constant feature
    (variance 0) finite. Alias: ``BatchNorm``.
    """

    def __init__(self, input_dim: int | None = None, momentum: float = 0.1, epsilon: float = 1e-5,
                 optimizer: Any = None) -> None:
        self.momentum = check_float(momentum, "momentum", minimum=0.0, maximum=1.0)
        self.epsilon = check_float(epsilon, "epsilon", minimum=0.0, min_inclusive=False)
        self._features(input_dim, optimizer)

    def weight_shapes(self):
        return [(self.output_dim,)] * 4

    def weight_names(self):
        return ["gamma", "beta", "moving_mean", "moving_variance"]

    def count_trainable_params(self):
        return 2 * self.output_dim

    def table_row(self, offset):
        row = super().table_row(offset)
        row[W_OFF], row[B_OFF], row[KIND] = offset, offset + self.output_dim, BATCHNORM_LAYER
        return row

    def table_floats(self):
        # A momentum of -1: frozen (Keras' trainable=False), in inference mode in training too.
        return [self.momentum if self.trainable else -1.0, self.epsilon]

    def check_weights(self, arrays, name):
        if np.any(arrays[3] < 0):
            raise ValueError(f"{name}: running_var (the fourth array) must be >= 0, got {np.min(arrays[3])}")

    def initial_weights(self, rng, dtype):
        n = self.output_dim
        return [np.ones(n, dtype), np.zeros(n, dtype), np.zeros(n, dtype), np.ones(n, dtype)]

    def onnx_nodes(self, graph, inputs):
        """Folded into Mul and Add with the running statistics:
        x * gamma / sqrt(var + eps) + (beta - mean * gamma / sqrt(var + eps))."""
        gamma, beta, mean, var = (w.astype(np.float64) for w in self.get_weights())
        scale = gamma / np.sqrt(var + self.epsilon)
        return graph.op("Add", [graph.op("Mul", [inputs[0], graph.constant("bn_scale", scale)]),
                                graph.constant("bn_shift", beta - mean * scale)])


BatchNorm = BatchNormalization


class LayerNormalization(_Normalization):
    """Layer normalization over the features, as Keras' ``LayerNormalization(axis=-1,
    epsilon=1e-3, center=True, scale=True)`` and ``torch.nn.LayerNorm(features, eps=epsilon,
    elementwise_affine=scale, bias=center)`` (Ba, Kiros & Hinton, 2016).

    Each row is normalized with its own mean and biased variance, then scaled by gamma (if
    ``scale``; trained, initially 1) and shifted by beta (if ``center``; trained, initially 0).
    Training and inference compute the same thing: there are no running statistics.
    ``get_weights()`` returns [gamma, beta], those the layer has. ``axis``: the feature axis, -1
    or 1 (a model's inputs are (rows, features)).
    """

    def __init__(self, axis: int = -1, epsilon: float = 1e-3, center: bool = True, scale: bool = True,
                 input_dim: int | None = None, optimizer: Any = None) -> None:
        if isinstance(axis, (bool, np.bool_)) or axis not in (-1, 1):
            raise ValueError(f"axis must be -1 or 1 (the features of a (rows, features) input), got {axis!r}")
        self.axis = int(axis)
        self.epsilon = check_float(epsilon, "epsilon", minimum=0.0, min_inclusive=False)
        for name, value in (("center", center), ("scale", scale)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        self.center, self.scale = bool(center), bool(scale)
        self._features(input_dim, optimizer)

    def weight_shapes(self):
        return [(self.output_dim,)] * (self.scale + self.center)

    def weight_names(self):
        return ["gamma"] * self.scale + ["beta"] * self.center

    def table_row(self, offset):
        row = super().table_row(offset)
        row[W_OFF] = offset if self.scale else -1
        row[B_OFF] = offset + self.scale * self.output_dim if self.center else -1
        row[KIND] = LAYERNORM_LAYER
        return row

    def table_floats(self):
        return [float(SCALE * self.scale + CENTER * self.center), self.epsilon]

    def initial_weights(self, rng, dtype):
        n = self.output_dim
        return [np.ones(n, dtype)] * self.scale + [np.zeros(n, dtype)] * self.center

    def onnx_nodes(self, graph, inputs):
        """ONNX's LayerNormalization (opset 17) over the last axis; a constant gamma of ones and beta
        of zeros stand in for those the layer lacks."""
        if graph.opset < 17:
            raise ValueError(f"opset must be at least 17 for LayerNormalization's operator, got {graph.opset}")
        weights = iter(self.get_weights())
        n = self.output_dim
        gamma = next(weights) if self.scale else np.ones(n)
        beta = next(weights) if self.center else np.zeros(n)
        return graph.op("LayerNormalization", [inputs[0], graph.constant("ln_gamma", gamma),
                                               graph.constant("ln_beta", beta)], axis=-1, epsilon=self.epsilon)
