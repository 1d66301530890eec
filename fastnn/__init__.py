"""fastnn: fast neural-network training with Numba kernels, on the CPU and on CUDA GPUs, Keras-style API.

    >>> from fastnn import MLP, Dense, ReLU, Softmax, Adam, CrossEntropy, Dataset
    >>> model = MLP(seed=0)
    >>> model.add(Dense(784, 100, activation=ReLU()))
    >>> model.add(Dense(100, 10, activation=Softmax()))
    >>> model.compile(loss=CrossEntropy(), optimizer=Adam(1e-3), metrics=["accuracy"])
    >>> history = model.fit(x, y, epochs=10, batch_size=50)
"""
from .activations import ELU, Heaviside, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .callbacks import (Callback, CSVLogger, EarlyStopping, History, LambdaCallback, LearningRateScheduler,
                        ModelCheckpoint, ReduceLROnPlateau, TensorBoard, TerminateOnNaN)
from . import data, distributed, metrics
from .datasets import Dataset, load_digits, load_mnist
from .initializers import (Constant, GlorotNormal, GlorotUniform, HeNormal, HeUniform, Normal, Ones, RandomNormal,
                           RandomUniform, Uniform, XavierNormal, XavierUniform, Zeros)
from . import layers
# Each layer module's ``__all__`` is its public layers, so a new layer needs no line here. (Type
# checkers follow a star import and ``+=`` of its ``__all__`` one module deep, hence each module.)
from .layers.base import *  # noqa: F401,F403
from .layers.core import *  # noqa: F401,F403
from .layers.embedding import *  # noqa: F401,F403
from .layers.merging import *  # noqa: F401,F403
from .layers.normalization import *  # noqa: F401,F403
from .layers.user import *  # noqa: F401,F403
from .losses import (MAE, MAPE, MSE, MSLE, SSE, BinaryCrossEntropy, CosineSimilarity, CrossEntropy, CustomLoss,
                     KLDivergence, Loss, PerceptronCriterion)
from .sequential import MLP, Perceptron, Sequential
from .functional import Model
from .model_io import load_model
from .optimizers import SGD, AdaGrad, Adagrad, Adam, AdamW, Optimizer, RMSProp, RMSprop
from .regularizers import L1, L1L2, L2, Regularizer
from .schedules import (CosineDecay, ExponentialDecay, InverseTimeDecay, LearningRateSchedule,
                        PiecewiseConstantDecay)
from .threading import set_num_threads, get_num_threads, threading_info

__version__ = "0.1.0"

# Public names only, written out (type checkers read a literal list, and ``+=`` of a module's
# ``__all__``): not the submodules (``from fastnn import *`` must not shadow the standard library's
# ``threading`` with fastnn's, for one). tests/test_typing.py checks it against the names defined here.
__all__ = ['AdaGrad', 'Adagrad', 'Adam', 'AdamW', 'BinaryCrossEntropy', 'CSVLogger', 'Callback', 'Constant',
           'CosineDecay', 'CosineSimilarity', 'CrossEntropy', 'CustomLoss', 'Dataset', 'ELU',
           'EarlyStopping', 'ExponentialDecay', 'GlorotNormal', 'GlorotUniform', 'HeNormal', 'HeUniform',
           'Heaviside', 'History', 'Identity', 'InverseTimeDecay', 'KLDivergence', 'L1', 'L1L2', 'L2',
           'LambdaCallback', 'LeakyReLU', 'LearningRateSchedule', 'LearningRateScheduler', 'Loss', 'MAE',
           'MAPE', 'MLP', 'MSE', 'MSLE', 'Model', 'ModelCheckpoint', 'Normal', 'Ones', 'Optimizer',
           'Perceptron', 'PerceptronCriterion', 'PiecewiseConstantDecay', 'RMSProp', 'RMSprop',
           'RandomNormal', 'RandomUniform', 'ReLU', 'ReduceLROnPlateau', 'Regularizer', 'SGD', 'SSE',
           'Sequential', 'Sigmoid', 'Softmax', 'Tanh', 'TensorBoard', 'TerminateOnNaN', 'Uniform',
           'XavierNormal', 'XavierUniform', 'Zeros', 'get_num_threads', 'load_digits', 'load_mnist',
           'load_model', 'set_num_threads', 'threading_info']
__all__ += layers.base.__all__
__all__ += layers.core.__all__
__all__ += layers.embedding.__all__
__all__ += layers.merging.__all__
__all__ += layers.normalization.__all__
__all__ += layers.user.__all__
