"""Callbacks, Keras-style: small objects whose hooks ``fit`` calls at the start and end of
training, of each epoch and (when a callback defines one) of each batch.

A callback that defines ``on_batch_end(batch, logs)`` makes ``fit`` return to Python after
every batch; otherwise a whole epoch runs inside one compiled call.

One module a kind: ``callback`` (the base ``Callback``, ``History``, ``LambdaCallback``,
``TerminateOnNaN``), ``monitors`` (the callbacks that watch a logged metric: ``EarlyStopping``,
``ReduceLROnPlateau``, ``ModelCheckpoint``; and ``LearningRateScheduler``), ``logs`` (the
writers of the logs: ``CSVLogger``, ``TensorBoard``).
"""
from .callback import Callback, History, LambdaCallback, TerminateOnNaN, _Muted
from .logs import CSVLogger, TensorBoard
from .monitors import EarlyStopping, LearningRateScheduler, ModelCheckpoint, ReduceLROnPlateau

__all__ = ["CSVLogger", "Callback", "EarlyStopping", "History", "LambdaCallback", "LearningRateScheduler",
           "ModelCheckpoint", "ReduceLROnPlateau", "TensorBoard", "TerminateOnNaN"]
