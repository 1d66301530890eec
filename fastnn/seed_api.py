"""The seed framework's training call, ``model.train(dataset, loss=..., epochs=..., metrics=[...])``,
on every model; its other names are ``MLP.addLayer`` (``add``) and ``Perceptron``
(``fastnn.sequential``)."""
import os

from . import losses
from . import metrics as metrics_
from .callbacks import TensorBoard
from .fit_inputs import _callback_list
from .trainer import _one_training_call


class SeedAPI:
    """``train``: the seed's names for a dataset's epochs and metrics, translated into ``fit``'s."""

    @_one_training_call
    def train(self, dataset, loss=None, epochs=10, metrics=("train_loss", "train_accuracy"), tensorboard=False,
              callbacks=None, verbose=1):
        """The seed framework's training call: ``classifier.train(dataset, loss=CrossEntropy(), epochs=10,
        metrics=["train_loss", "test_loss", "train_accuracy", "test_accuracy"], tensorboard=False, callbacks={})``.

        Trains on ``dataset.x_train`` in batches of ``dataset.batch_size``; "test_*" metrics are
        measured on the dataset's test rows after each epoch. Returns a History keyed by the
        metric names asked for, and prints each epoch's figures under those names. Callbacks
        see fit's logs (``loss``, ``val_loss``, ...).
        """
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        known = {}  # the seed's name -> fit's log key
        for m in metrics:
            split = m.split("_", 1) if isinstance(m, str) else []
            if len(split) != 2 or split[0] not in ("train", "test"):
                raise ValueError(f"metrics must be names 'train_<metric>' or 'test_<metric>' (train_loss, "
                                 f"test_accuracy, train_auc, ...), got {m!r}")
            known[m] = ("" if split[0] == "train" else "val_") + split[1]
        # Loss and metrics only: a second train() call continues with the optimizers' state, as
        # a second fit() does (compile would reset it).
        loss = losses.get(loss if loss is not None else (self.loss or "cross_entropy"))
        names = [k.split("_", 1)[1] for k in metrics]
        chosen = metrics_.canonical_names([n for n in names if n != "loss"], loss.classification, self.output_dim)
        for m in metrics:  # the logs use canonical names: 'test_acc' is logged as 'val_accuracy'
            prefix, name = m.split("_", 1)
            if name != "loss":
                name = metrics_.canonical_names([name], loss.classification, self.output_dim)[0]
            known[m] = ("" if prefix == "train" else "val_") + name
        self.loss, self.metrics = loss, chosen
        wants_test = any(m.startswith("test_") for m in metrics)
        if wants_test and len(dataset.x_test) == 0:
            raise ValueError("test metrics were asked for but the dataset has no test rows")
        callbacks = _callback_list(callbacks)
        if tensorboard:
            board = TensorBoard()
            callbacks.append(board)
            if verbose:
                print(f"TensorBoard logs: {os.path.abspath(board.log_dir)} (view with: tensorboard --logdir "
                      f"{board.log_dir})")
        history = self._checked_fit(dataset.x_train, dataset.y_train, epochs, dataset.batch_size,
                                    (dataset.x_test, dataset.y_test) if wants_test else None, 0.0, True, callbacks,
                                    verbose, 0, labels={key: m for m, key in known.items()})
        history.history = {m: history.history[known[m]] for m in metrics}
        return history
