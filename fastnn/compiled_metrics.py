"""What ``compile``'s metrics become: their log names, the training counters the compiled step
adds to (``kernels.metrics``' spec, and the sums of the metric functions after them), the epoch's
figures from those counts, the exact figures of validation and ``evaluate`` from the predictions,
and their entry in the saved config. A model of one output counts its named metrics over its whole
output (accuracy with the loss); a model of several outputs (``functional.Model``) each output's
over its own columns, and each output's loss as a counted function."""
import numpy as np

from . import distributed
from . import metrics as metrics_
from .user_losses import metric_bundle, split_metrics, user_metric_values


class CompiledMetrics:
    """The compiled metrics of a model (a mixin of ``Trainer``): set by ``compile``."""
    _user_metrics = ()  # (name, function) of the metrics given as functions, in compile's order
    # ("<output>_loss", function) of each output of a model of several outputs (``Model.compile``):
    # counted in the compiled step as the metric functions are, and logged before them.
    _output_losses = ()
    # None, or each output's metrics of a model of several outputs (``functional.OutputMetrics``):
    # counted over its columns of the outputs side by side, logged as "<output>_<metric>".
    _metric_groups = None

    def _resolve_metrics(self, metrics, loss):
        """(the metrics' log names, (name, function) of those given as functions, None): ``compile``'s
        metrics checked against ``loss`` and the output (a model of several outputs has its own:
        ``functional.Model``, whose third entry describes each output's)."""
        metrics, user_metrics = split_metrics(metrics)
        metrics = metrics_.canonical_names(metrics, loss.classification, self.output_dim)
        for name, _ in user_metrics:
            if name in metrics or name == "loss":
                raise ValueError(f"metrics: the function {name!r} has the name of another metric; rename it")
        return metrics + [name for name, _ in user_metrics], user_metrics, None

    def _metrics_config(self, function):
        """``compile``'s metrics as the model's config saves them: each name, and ``function(f)`` for
        each function f; a list per output for a model of several outputs."""
        if self._metric_groups is not None:
            return [list(g.names) + [function(fn) for _, fn in g.functions] for g in self._metric_groups]
        functions = dict(self._user_metrics)
        return [function(functions[m]) if m in functions else m for m in self.metrics]

    def log_names(self, validation=False):
        """The keys of each epoch's logs in ``fit`` (``History.history``'s): 'loss' and the compiled
        metrics, then, with validation data, the same with ``val_``. Callbacks get them before
        training as ``params["metrics"]`` (Keras 2's name)."""
        names = ["loss"] + [name for name, _ in self._output_losses] + self.metrics
        return names + ["val_" + k for k in names] if validation else names

    def _metric_counters(self):
        """(spec or None, zeroed counts) of the training metrics counted in the compiled step; the
        user metrics' sums follow the counters (``_user_metric_args``)."""
        spec, size = self._counter_spec()
        return (spec if spec.shape[0] else None), np.zeros(size + len(self._counted_functions()))

    def _counted_functions(self):
        """(name, function) of what the compiled step counts as functions: the outputs' losses, then
        the metric functions."""
        return tuple(self._output_losses) + tuple(self._user_metrics)

    def _counter_spec(self):
        if self._metric_groups is not None:
            return metrics_.output_counter_spec([(g.names, g.first, g.width) for g in self._metric_groups])
        return metrics_.counter_spec([m for m in self.metrics if m != "accuracy"], self.output_dim)

    def _counter_values(self, spec, counts, rows):
        """The named metrics' figures from the epoch's counters (accuracy aside, for one output)."""
        if self._metric_groups is None:
            return metrics_.from_counts(self.metrics, spec, counts, self.output_dim, rows)
        return {f"{g.output}_{k}": v for g in self._metric_groups
                for k, v in metrics_.from_counts(g.names, spec, counts, g.width, rows, g.first).items()}

    def _exact_metric_values(self, y, pred, batch_size, weights=None):
        """The compiled metrics that validation and ``evaluate`` compute from the predictions of
        all their rows: the named ones exactly (accuracy aside, for one output: the loss counts it),
        the functions as in training, each a mean over batches of ``batch_size`` rows (the outputs'
        losses of several weighted by ``weights`` when given, as the loss)."""
        if self._metric_groups is None:
            values = metrics_.from_predictions([m for m in self.metrics if m != "accuracy"
                                                and m not in dict(self._counted_functions())], y, pred)
        else:
            values = {f"{g.output}_{k}": v for g in self._metric_groups
                      for k, v in metrics_.from_predictions(g.names, y[:, g.first:g.first + g.width],
                                                            pred[:, g.first:g.first + g.width]).items()}
        values.update(user_metric_values(self._counted_functions(), y, pred, batch_size, self.dtype, weights))
        return values

    def _needs_predictions(self):
        """Whether validation and ``evaluate`` need the predictions (``_exact_metric_values``)."""
        return any(m != "accuracy" for m in self.metrics) or bool(self._output_losses)

    def _user_metric_args(self):
        """The backends' ``user_metrics`` keyword (none without user metrics): a function of the
        dtype giving ``train_batches``' bundle of the user metrics' compiled functions."""
        if not self._counted_functions():
            return {}
        offset, user = self._counter_spec()[1], self._counted_functions()
        return {"user_metrics": lambda dtype: metric_bundle(user, dtype, offset)}

    def _logs(self, batch_loss, batch_correct, rows, spec=None, counts=None, counted_rows=0.0):
        """Loss (and accuracy) weighted over these batches' rows; the other metrics from the
        epoch's counters, over the ``counted_rows`` rows counted so far."""
        total = rows.sum()
        values = {"loss": float(np.dot(batch_loss, rows) / total)}
        if "accuracy" in self.metrics:
            values["accuracy"] = float(batch_correct.sum() / total)
        if spec is not None or self._counted_functions():  # each rank counted its own rows
            counts = distributed.sum_over_ranks(counts)
        if spec is not None:
            values.update(self._counter_values(spec, counts, counted_rows))
        if self._counted_functions():
            offset = counts.size - len(self._counted_functions())
            values.update({name: float(counts[offset + i] / counted_rows)
                           for i, (name, _) in enumerate(self._counted_functions())})
        return {k: values[k] for k in self.log_names()}
