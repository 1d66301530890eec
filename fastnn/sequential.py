"""``MLP`` (alias ``Sequential``): a stack of layers, each reading the one before, built by
``add`` (the seed framework's ``addLayer``); and ``Perceptron``, Rosenblatt's one-layer model
built on it."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from . import losses, optimizers
from .activations import Heaviside
from .layers import Dense, Embedding, Input, Layer
from .network import Network


class MLP(Network):
    """A multi-layer perceptron: ``MLP([Dense(784, 100, activation="relu"), ...])`` or ``add`` layer by layer.

    - ``seed``: makes weight initialization and shuffling reproducible: an integer in [0, 2**64 - 1]
      (what both NumPy and torch.manual_seed take).
    - ``dtype``: 'float32' (default) or 'float64', for parameters and computation.
    - ``device``: 'cpu' (default) or 'cuda' (needs numba-cuda and an NVIDIA GPU).
    """
    config_name = "MLP"

    def __init__(self, layers: Iterable[Layer] | None = None, seed: int | None = None, dtype: str = "float32",
                 device: str = "cpu", name: str | None = None) -> None:
        super().__init__(seed=seed, dtype=dtype, device=device, name=name or "mlp")
        for layer in layers or []:
            self.add(layer)

    # ---- building -------------------------------------------------------------------------

    def add(self, layer: Layer) -> None:
        """Append a layer; its input_dim must match the previous layer's output."""
        if self._busy.locked():
            raise RuntimeError("the model is training (fit or train_on_batch is running, here or in another "
                               "thread): its architecture cannot change until that returns")
        if not isinstance(layer, Layer):
            raise TypeError("layer must be a fastnn layer (Dense, Activation, Dropout, BatchNormalization, Input), "
                            f"got {type(layer).__name__}")
        if layer._model is not None:
            raise ValueError(f"this {type(layer).__name__} already belongs to a model: create a new layer")
        if isinstance(layer, Input) and self.layers:
            raise ValueError("Input must be the first layer")
        layer.connect(self.layers[-1].output_dim if self.layers else None)
        if isinstance(layer, Embedding) and self._compute_layers():
            raise ValueError("an Embedding reads integer ids: it must be the first layer (after an optional Input), "
                             f"but the model already has {type(self._compute_layers()[-1]).__name__} layers")
        if layer.input_dim is None:
            raise ValueError(f"the first layer needs input_dim (or add an Input first): {layer!r}")
        weights = self.get_weights() if self._backend is not None else None
        layer._model = self
        self.layers.append(layer)
        if weights is not None:  # keep trained weights; only the new layer is initialised
            self._build(weights + self._initial_weights([layer]))
        return self

    addLayer = add  # the seed framework's name

    @classmethod
    def _from_layers(cls, config, layers, device):
        """``from_config``'s model from its deserialized layers: a stack, in order."""
        model = cls(seed=config["model"]["seed"], dtype=config["model"]["dtype"], device=device,
                    name=config["model"]["name"])
        for layer in layers:
            model.add(layer)
        return model

    def __repr__(self):
        return f"MLP(layers={self.layers!r}, dtype={np.dtype(self.dtype).name!r}, device={self.device!r})"


Sequential = MLP


class Perceptron(MLP):
    """Rosenblatt's single-layer perceptron: Dense + Heaviside step, trained by the perceptron rule
    w += learning_rate (t - y) x, b += learning_rate (t - y) for each sample (batch_size=1),
    through the PerceptronCriterion loss and SGD. Targets are 0/1; weights start at zero."""

    def __init__(self, input_dim: int, output_dim: int = 1, learning_rate: float = 1.0, seed: int | None = None,
                 dtype: str = "float32") -> None:
        super().__init__(seed=seed, dtype=dtype)
        self.add(Dense(input_dim, output_dim, activation=Heaviside(), optimizer=optimizers.SGD(learning_rate),
                       kernel_initializer="zeros"))
        self.compile(loss=losses.PerceptronCriterion(), metrics=["accuracy"])

    def fit(self, x, y, epochs=10, batch_size=1, **kwargs):
        return super().fit(x, y, epochs=epochs, batch_size=batch_size, **kwargs)
