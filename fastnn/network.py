"""The base of every model: ``Network``, the container of layers and their weights.

What it holds: the layers, in the order the kernels run them; the flat parameter buffer's
layout (each layer's offset, its row of the kernels' tables, the optimizers' slices) and the
backend that owns the buffers; the weights (``get_weights``/``set_weights``, ``named_weights``,
``count_params``), ``summary`` and ``to``. What it is not: the training loop
(``fastnn.trainer``), predict and evaluate (``fastnn.inference``), the seed framework's ``train``
(``fastnn.seed_api``), config, saving and pickling (``fastnn.model_io``), export
(``fastnn.onnx``, ``fastnn.interop``). The models
themselves are ``MLP``/``Sequential`` (``fastnn.sequential``: ``add``) and the functional
``Model`` (``fastnn.functional``: a graph of layer calls).
"""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import distributed, optimizers
from . import onnx as onnx_export
from . import user_layers as user_kernels
from .backend import INT64_MAX
from .devices import get_backend
from .inference import Inference
from .layers import Input, Layer, check_weight_list
from .locks import ModelLock
from .model_io import Serializable
from .schedules import LearningRateSchedule
from .seed_api import SeedAPI
from .spec import build_spec
from .trainer import Trainer
from .user_losses import check_device_runs_loss
from .validation import check_dtype, check_int

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11


class Network(Trainer, Inference, SeedAPI, Serializable):
    """Layers and their weights in one flat buffer on a backend; the models' common base.

    - ``seed``: makes weight initialization and shuffling reproducible: an integer in [0, 2**64 - 1]
      (what both NumPy and torch.manual_seed take).
    - ``dtype``: 'float32' (default) or 'float64', for parameters and computation.
    - ``device``: 'cpu' (default) or 'cuda' (needs numba-cuda and an NVIDIA GPU).
    """

    def __init__(self, seed=None, dtype="float32", device="cpu", name=None):
        # NumPy takes seeds >= 0, torch.manual_seed up to 2**64 - 1: fastnn takes both ranges' overlap.
        self.seed = None if seed is None else check_int(seed, "seed", minimum=0, maximum=2**64 - 1)
        self.dtype = check_dtype(dtype)
        self.device = device
        self.name = name or "mlp"
        self.layers = []
        self.loss = None
        self.optimizer = None
        self.metrics = []
        self.stop_training = False
        self._rng = np.random.default_rng(self.seed)
        self._backend = None
        self._diverged = None  # why the weights are not finite, after fit raised FloatingPointError
        self._busy = threading.Lock()  # held by fit and train_on_batch: one training call at a time
        self._lock = ModelLock()  # every call that uses the backend's buffers: shared by inference (locks.py)
        get_backend(device, self.dtype)  # fail now, not at the first fit, if the device is missing

    # ---- the layers -----------------------------------------------------------------------

    def _initial_weights(self, layers):
        return [w for layer in layers if layer.count_params()
                for w in layer.initial_weights(self._rng, self.dtype)]

    def _compute_layers(self):
        return [layer for layer in self.layers if not isinstance(layer, Input)]

    def _ensure_built(self):
        if self._backend is None:
            with self._lock:  # two threads' first predict must not build twice
                if self._backend is None:
                    if not self._compute_layers():
                        raise ValueError("the model has no layers: add a Dense or Activation layer first")
                    self._build(self._initial_weights(self.layers))

    @property
    def input_dim(self) -> int | None:
        return self.layers[0].input_dim if self.layers else None

    @property
    def output_dim(self) -> int | None:
        return self.layers[-1].output_dim if self.layers else None

    def _check_x(self, x, name, finite=True):
        """The model's input checked by its first layer (an Embedding wants ids) and as the kernels read it.
        ``finite=False``: but for NaN and infinity, where the first layer's check is the base one
        (the caller's compiled pass scans for them)."""
        self._ensure_built()
        first = self._compute_layers()[0]
        if finite or type(first).check_input is not Layer.check_input:
            return first.check_input(x, name, self.dtype)
        return first.check_input(x, name, self.dtype, finite=False)

    # ---- what the backend runs: the layout, the optimizers' slices, the statistics --------

    def _build(self, weights):
        """Lay ``weights`` out in one flat buffer, [W1, b1, W2, b2, ...], build the network's
        specification (``fastnn.spec``) and load both into a new backend.

        The random key and step (Dropout's masks) carry over from an earlier build."""
        self._check_device_runs_layers(self.device, f"this model is on {self.device!r}")
        spec = build_spec(self._compute_layers(), self.dtype, self.optimizer or _default_optimizer(self),
                          graph=self._graph_table(), table_row=self._table_row)
        params = np.concatenate([np.ravel(w) for w in weights]).astype(self.dtype, copy=False) if weights \
            else np.zeros(0, self.dtype)
        rng = self._backend.host("rng") if self._backend is not None else np.array([self._random_key(), 0])
        if spec.user is not None:
            users = []  # each once, in the order of their compiled functions (a shared one has one pair)
            for layer in spec.layers:
                if layer.is_user_layer() and all(layer is not u for u in users):
                    users.append(layer)
            _probe_user_layers(users,
                               zip(spec.user.forward, spec.user.backward), params)
        backend = get_backend(self.device, self.dtype)
        # The backend takes these fresh arrays as its own (no copies: a Dense(8000, 8000) is 256 MB
        # a buffer), with the optimizer state the spec's slices start from.
        state1 = np.zeros_like(params)
        for (lo, hi, _), value in zip(spec.slices.meta, spec.slices.initial):
            state1[lo:hi] = value
        backend.load(spec, {"params": params, "state1": state1, "state2": np.zeros_like(params),
                            "opt_steps": np.zeros(spec.slices.meta.shape[0], np.int64), "rng": rng})
        self._spec, self._backend = spec, backend

    def _check_device_runs_layers(self, device, why):
        """A ValueError (``why`` says what was asked) if ``device`` cannot run one of the layers:
        user layers (Lambda, Layer subclasses) run on the CPU only."""
        users = [layer for layer in self._compute_layers() if layer.is_user_layer()]
        if users and device != "cpu":
            raise ValueError(f"{type(users[0]).__name__} is a layer of your own: such layers run on the CPU only "
                             f"({why})")
        check_device_runs_loss(device, self.loss, self._user_metrics, why)

    def _table_row(self, layer, offset):
        """A layer's row of the kernels' table (a functional ``Model`` makes its inputs' rows)."""
        return layer.table_row(offset)

    def _graph_table(self):
        """The rows' sources (``kernels.network.Graph``) of a functional ``Model``; None for a stack."""
        return None

    def _random_key(self):
        """The key of Dropout's masks: the seed itself, so that a seed fixes them (and the shuffling
        stream is left as it was); without a seed, fresh entropy."""
        if self.seed is not None:
            return self.seed - 2**64 if self.seed > INT64_MAX else self.seed  # its 64 bits, as an int64
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))

    def _configure_optimizers(self):
        """Give each run of consecutive layers that share an optimizer one slice of the flat
        buffers (a new spec of the same network), and reset the optimizer state (momentum,
        moments, step counts)."""
        self._spec = self._spec.with_optimizer(self.optimizer or _default_optimizer(self))
        self._backend.configure_optimizers(self._spec)

    def optimizers(self):
        """The distinct optimizer objects that update this model's parameters."""
        self._ensure_built()
        return self._spec.slices.distinct()

    def _opt_hyper(self):
        """Hyper-parameters read from the optimizer objects now (a scheduler may have changed them)."""
        return self._spec.slices.hyper()

    def _average_running_statistics(self):
        """Under MPI: BatchNorm's running statistics, which each rank updates from its own rows,
        averaged over the ranks so that all hold the same model."""
        if distributed.world() is None:
            return
        statistics = self._backend.running_statistics()
        if statistics.size:
            self._backend.load_running_statistics(distributed.sum_over_ranks(statistics) / distributed.size())

    def _penalty(self):
        """The weight penalty (the regularizers' sum) at the current parameters, from the backend."""
        return self._backend.penalty()

    # ---- weights ----------------------------------------------------------------------------

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.layers)

    def _weight_shapes(self):
        return [s for layer in self.layers for s in layer.weight_shapes()]

    def _unflatten(self, flat):
        """A flat parameter vector as [W1, b1, W2, b2, ...] (new arrays)."""
        return _split(flat, self._weight_shapes())

    def get_weights(self) -> list[NDArray[Any]]:
        """All parameters as [W1, b1, W2, b2, ...] (new arrays; W of shape (input_dim, output_dim))."""
        self._ensure_built()
        return self._unflatten(self._backend.host("params"))

    @property
    def weights(self) -> list[NDArray[Any]]:
        """Every weight array, as ``get_weights()`` (Keras' ``model.weights``; copies, not variables)."""
        return self.get_weights()

    @property
    def trainable_weights(self) -> list[NDArray[Any]]:
        """The arrays an optimizer trains: each trainable layer's trained weights (not BatchNorm's
        running statistics), in ``get_weights`` order."""
        return self._weights_by_trained(True)

    @property
    def non_trainable_weights(self) -> list[NDArray[Any]]:
        """The rest: frozen layers' weights and BatchNorm's running statistics, in ``get_weights`` order."""
        return self._weights_by_trained(False)

    def _weights_by_trained(self, trained):
        arrays, out, at = self.get_weights(), [], 0
        for layer in self.layers:
            n, k = len(layer.weight_shapes()), layer.trainable_weight_count()
            out += arrays[at: at + k] if trained else arrays[at + k: at + n]
            at += n
        return out

    def set_weights(self, weights: Sequence[ArrayLike]) -> None:
        """Replace all parameters; ``weights`` as ``get_weights()`` returns them."""
        self._ensure_built()
        shapes = self._weight_shapes()
        arrays = check_weight_list(weights, shapes, "weights", self.dtype)
        start = 0
        for layer in self.layers:
            n = len(layer.weight_shapes())
            layer.check_weights(arrays[start: start + n], f"weights[{start}:{start + n}]")
            start += n
        flat = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0, self.dtype)
        with self._lock:
            self._backend.write("params", 0, flat)
        self._diverged = None

    def _layer_weights(self, layer):
        """``layer``'s arrays: only its slice of the buffer comes to the host."""
        self._ensure_built()
        lo = self._spec.offset(layer)
        return _split(self._backend.host("params", lo, lo + layer.count_params()), layer.weight_shapes())

    def _set_layer_weights(self, layer, weights):
        self._ensure_built()
        arrays = check_weight_list(weights, layer.weight_shapes(), "weights", self.dtype)
        layer.check_weights(arrays, "weights")
        if arrays:
            self._backend.write("params", self._spec.offset(layer), np.concatenate([a.ravel() for a in arrays]))

    def layer_names(self):
        """Each layer's name as ``summary`` shows it: '<class in lower case>_<index>'."""
        return [f"{type(layer).__name__.lower()}_{i}" for i, layer in enumerate(self.layers)]

    def named_weights(self, gradients=False):
        """[(layer name, weight name, array)] of every parameter array; with ``gradients``,
        (layer name, weight name, array, gradient of the last training step) (zeros before any)."""
        self._ensure_built()
        params = self._backend.host("params")
        grads = self._backend.host("grads") if gradients else None
        out = []
        for name, layer in zip(self.layer_names(), self.layers):
            if isinstance(layer, Input):
                continue
            lo, n = self._spec.offset(layer), layer.count_params()
            arrays = _split(params[lo: lo + n], layer.weight_shapes())
            grad_arrays = _split(grads[lo: lo + n], layer.weight_shapes()) if gradients else []
            for j, (weight_name, array) in enumerate(zip(layer.weight_names(), arrays)):
                out.append((name, weight_name, array) + ((grad_arrays[j],) if gradients else ()))
        return out

    def learning_rate_now(self, optimizer=None):
        """The learning rate of ``optimizer``'s next step (default: the first optimizer's), a
        schedule evaluated at its step count (as Keras' ``optimizer.learning_rate``), or None for
        a model with no trained parameters."""
        self._ensure_built()
        owners = self._spec.slices.optimizers
        slices = [i for i, opt in enumerate(owners) if optimizer is None or opt is optimizer]
        if not slices:
            if optimizer is None:
                return None
            raise ValueError("optimizer updates none of this model's parameters")
        opt = owners[slices[0]]
        if isinstance(opt.learning_rate, LearningRateSchedule):
            return float(opt.learning_rate(int(self._backend.host("opt_steps")[slices[0]])))
        return float(opt.learning_rate)

    # ---- description and device -------------------------------------------------------------

    def _connections(self):
        """What each layer reads, by name, for ``summary``'s "Connected to" column; None for a
        stack, where each layer reads the one before."""
        return None

    def summary(self, print_fn: Callable[[str], Any] = print) -> None:
        """Print a table of layers, output widths, activations and parameter counts (Keras'
        ``summary``); a functional ``Model`` adds the layers each one reads ("Connected to")."""
        names = [f"{name} ({type(layer).__name__})" for name, layer in zip(self.layer_names(), self.layers)]
        width = max([28] + [len(n) + 2 for n in names])
        reads = self._connections()
        lines = [f'Model: "{self.name}" ({np.dtype(self.dtype).name}, {self.device})',
                 f"{'Layer (type)':<{width}}{'Output Shape':<16}{'Activation':<14}{'Param #':>10}"
                 + ("" if reads is None else "  Connected to")]
        for i, (name, layer) in enumerate(zip(names, self.layers)):
            act = type(layer.activation).__name__ if getattr(layer, "activation", None) is not None else ""
            lines.append(f"{name:<{width}}{str((None, layer.output_dim)):<16}{act:<14}{layer.count_params():>10,}"
                         + ("" if reads is None else f"  {reads[i]}"))
        trainable = sum(layer.count_trainable_params() for layer in self.layers)
        print_fn("\n".join(lines + [f"Total params: {self.count_params():,}", f"Trainable params: {trainable:,}",
                                    f"Non-trainable params: {self.count_params() - trainable:,}"]))

    def to(self, device: str) -> Self:
        """Move parameters and optimizer state to ``device`` ('cpu' or 'cuda'); returns self. The
        new backend runs what the old one ran (a functional ``Model``'s graph, the user layers'
        compiled functions). A model with user layers stays on the CPU: ``to('cuda')`` is a
        ValueError naming the layer, raised before anything moves, and the model stays usable."""
        backend = get_backend(device, self.dtype)
        self._check_device_runs_layers(device, f"the model stays on {self.device!r}")
        with self._lock:  # not while fit or predict runs on the old backend's buffers
            if self._backend is not None:
                backend.load(self._spec, self._backend.state())
                self._backend = backend
            self.device = device
        return self

    def to_onnx(self, path: str | os.PathLike[str], opset: int = 17) -> Any:
        """Export for inference as an ONNX file (``fastnn.onnx.export``; needs the onnx package)."""
        return onnx_export.export(self, path, opset)


def _probe_user_layers(layers, kernels, params):
    """Run each user layer's compiled wrappers once on two rows of random data, so that a function
    returning the wrong shape is a ValueError naming it now, not an error at the first batch."""
    rng = np.random.default_rng(0)
    for layer, (forward, backward) in zip(layers, kernels):
        x = rng.standard_normal((2, layer.input_dim)).astype(params.dtype)
        y = np.zeros((2, layer.output_dim), params.dtype)
        try:
            user_kernels.quietly(forward, x, params, y)
            dx = np.zeros_like(x)
            user_kernels.quietly(backward, x, params, y, np.ones_like(y), np.zeros_like(params), dx)
        except ValueError as exc:
            raise ValueError(str(exc)) from None


def _default_optimizer(model):
    """Adam, the seed framework's default optimizer, created once per model."""
    if getattr(model, "_default_optimizer", None) is None:
        model._default_optimizer = optimizers.Adam()
    return model._default_optimizer


def _split(flat, shapes):
    out, pos = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        out.append(flat[pos: pos + n].reshape(shape).copy())
        pos += n
    return out
