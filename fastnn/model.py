"""The models' public names, where they were before the model was split by concern:
``MLP``/``Sequential`` and ``Perceptron`` (``fastnn.sequential``), the functional ``Model``
(``fastnn.functional``), ``load_model`` (``fastnn.model_io``) and their common base ``Network``
(``fastnn.network``). The training loop is ``fastnn.trainer``, inference ``fastnn.inference``."""
from .functional import Model
from .model_io import load_model, model_class
# Pickles written before the split name these functions here: they still load.
from .model_io import _rebuilt, _restore_unbuilt, _unpickle  # noqa: F401
from .network import Network
from .sequential import MLP, Perceptron, Sequential

__all__ = ["MLP", "Model", "Network", "Perceptron", "Sequential", "load_model", "model_class"]
