"""scikit-learn estimators backed by fastnn: ``MLPClassifier`` and ``MLPRegressor``.

They take ``sklearn.neural_network.MLPClassifier``'s parameter names with its meanings and
defaults, so that they drop into ``Pipeline``, ``GridSearchCV`` and ``clone``:
``hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate_init, max_iter,
shuffle, random_state, tol, early_stopping, validation_fraction, n_iter_no_change, warm_start,
verbose``, plus ``beta_1, beta_2, epsilon`` (Adam) and ``momentum, nesterovs_momentum`` (SGD).
Differences: the solvers are 'adam' and 'sgd' ('lbfgs' is a ValueError), the learning rate is
constant (scikit-learn's ``learning_rate`` schedules for SGD are not taken), and the network
computes in the dtype of ``X`` (float32 stays float32, anything else becomes float64), as
scikit-learn's own MLP does. ``X`` may be scipy.sparse (CSR, CSC, COO, as scikit-learn's MLP
takes it): it is never densified whole (``fastnn.sparse_input``).

Training is fastnn's compiled loop: ``alpha`` is scikit-learn's L2 penalty, 0.5 * alpha *
sum(W²) / batch rows on the kernels (not the biases), given to fastnn as ``L2``; the stopping
rule is scikit-learn's (``tol``, ``n_iter_no_change``, and with ``early_stopping`` the
validation score on ``validation_fraction`` of the rows, and the weights kept at the end are
those of the best validation score, whether the rule or ``max_iter`` ended training). One class
in ``y`` trains one logistic unit and predicts that class for every row, as scikit-learn does.

``sample_weight`` (``fit``, ``partial_fit``, ``score``) weights each row's loss as scikit-learn's
MLP does: a batch's loss and gradient, weight penalty included, are divided by the batch's sum
of weights rather than its rows (``kernels.table.SampleWeights``' ``normalize``); with early
stopping, the validation rows keep their weights, and the validation score is weighted.

Needs scikit-learn (``pip install scikit-learn``).
"""
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data

from .callbacks import Callback
from .config import FEW_ROWS
from .layers import Dense
from .sequential import MLP
from .optimizers import SGD, Adam
from .regularizers import L2

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_ACTIVATIONS = {"identity": None, "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
# scipy.sparse X, as scikit-learn's MLP takes it (other formats are converted to the first); fastnn
# reads it as CSR, a batch at a time (``fastnn.sparse_input``).
_SPARSE = ["csr", "csc", "coo"]
# _FINITE: validate_data leaves NaN and infinity in X to fastnn, whose fit and predict check for
# them themselves (a ValueError naming the row, before any kernel that could corrupt state):
# scikit-learn's scan read all of X once more, 12 ms of 0.25 s for MNIST's 60,000 rows.


class _BaseMLP(BaseEstimator):
    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate_init=0.001, max_iter=200, shuffle=True, random_state=None,
                 tol=1e-4, verbose=False, warm_start=False, momentum=0.9, nesterovs_momentum=True,
                 early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change

    # ---- parameters -----------------------------------------------------------------------

    def _check_params(self):
        sizes = [self.hidden_layer_sizes] if np.isscalar(self.hidden_layer_sizes) else list(self.hidden_layer_sizes)
        if any(not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got {self.hidden_layer_sizes!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
        if self.solver not in ("adam", "sgd"):
            raise ValueError(f"solver must be 'adam' or 'sgd' (fastnn has no 'lbfgs'), got {self.solver!r}")
        checks = (("alpha", self.alpha, 0.0, False), ("learning_rate_init", self.learning_rate_init, 0.0, True),
                  ("tol", self.tol, 0.0, False), ("momentum", self.momentum, 0.0, False),
                  ("epsilon", self.epsilon, 0.0, True))
        for name, value, low, strict in checks:
            if not isinstance(value, (int, float, np.number)) or value < low or (strict and value == low):
                raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value!r}")
        for name, value in (("beta_1", self.beta_1), ("beta_2", self.beta_2), ("validation_fraction",
                                                                               self.validation_fraction)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if self.momentum > 1:
            raise ValueError(f"momentum must be in [0, 1], got {self.momentum!r}")
        for name in ("max_iter", "n_iter_no_change"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.batch_size != "auto" and (not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1):
            raise ValueError(f"batch_size must be 'auto' or an integer >= 1, got {self.batch_size!r}")
        return sizes

    def _batch(self, n):
        return min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)

    # ---- the network ----------------------------------------------------------------------

    def _build(self, n_in, n_out, out_activation, loss, dtype, batch):
        sizes = self._check_params()
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        widths = [n_in] + sizes
        penalty = L2(0.5 * self.alpha / batch) if self.alpha else None
        layers = [Dense(a, b, activation=_ACTIVATIONS[self.activation], kernel_regularizer=penalty)
                  for a, b in zip(widths[:-1], widths[1:])]
        layers.append(Dense(widths[-1], n_out, activation=out_activation, kernel_regularizer=penalty))
        model = MLP(layers, seed=seed, dtype=dtype)
        if self.solver == "adam":
            optimizer = Adam(self.learning_rate_init, beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        else:
            optimizer = SGD(self.learning_rate_init, momentum=self.momentum,
                            nesterov=bool(self.nesterovs_momentum and self.momentum > 0))
        model.compile(loss=loss, optimizer=optimizer)
        model._weights_over_their_sum = True  # scikit-learn's normalization of sample_weight
        self._model, self._batch_size = model, batch
        self._shuffle_seed = seed

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    @staticmethod
    def _dtype(X):
        return np.float32 if X.dtype == np.float32 else np.float64

    def _epochs(self, X, Y, max_epochs, incremental, sample_weight=None):
        """Train epoch by epoch with scikit-learn's stopping rule; returns nothing, fills the
        fitted attributes. ``sample_weight``: None, or checked weights, one per row."""
        model, batch = self._model, self._batch_size
        w_val = None
        if self.early_stopping and not incremental:
            stratify = Y.argmax(axis=1) if isinstance(self, ClassifierMixin) and Y.shape[1] > 1 else None
            arrays = (X, Y) if sample_weight is None else (X, Y, sample_weight)
            split = train_test_split(*arrays, random_state=self._shuffle_seed, test_size=self.validation_fraction,
                                     stratify=stratify)
            X, X_val, Y, Y_val = split[:4]
            if sample_weight is not None:
                sample_weight, w_val = split[4:]
        else:
            X_val = Y_val = None
        if not hasattr(self, "loss_curve_") or not (self.warm_start or incremental):
            self.loss_curve_, self.n_iter_, self.t_ = [], 0, 0
            self.best_loss_, self._no_improvement = np.inf, 0
            self.validation_scores_ = [] if self.early_stopping else None
            self.best_validation_score_ = -np.inf if self.early_stopping else None
            self._best_weights = None
        self._rows = X.shape[0]
        stopping = _SklearnStopping(self, X_val, Y_val, incremental, w_val)
        # One fit call for all epochs (the input is checked once): the callback keeps
        # scikit-learn's fitted attributes and applies its stopping rule after each epoch.
        model.fit(X, Y, epochs=max_epochs, batch_size=min(batch, X.shape[0]), shuffle=self.shuffle, verbose=0,
                  callbacks=[stopping], sample_weight=sample_weight)
        if self.early_stopping and not incremental and self._best_weights is not None:
            # As scikit-learn: the best validation score's weights, whether the stopping rule
            # ended training or max_iter did.
            model.set_weights(self._best_weights)
        if not stopping.converged and not incremental and max_epochs == self.max_iter:
            import warnings
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                          "optimization hasn't converged yet.", ConvergenceWarning)
        weights = model.get_weights()
        self.coefs_, self.intercepts_ = weights[0::2], weights[1::2]
        self.n_layers_ = len(self.coefs_) + 1

    def _predict_raw(self, X):
        model = self.__dict__.get("_model")
        if (model is not None and type(X) is np.ndarray and X.ndim == 2 and 0 < X.shape[0] <= FEW_ROWS
                and X.dtype in _FLOATS and X.shape[1] == self.n_features_in_ and "feature_names_in_" not in self.__dict__):
            # A few rows of a plain float array (online inference): what validate_data would
            # check here is the width (above) and NaN and infinity, which model.predict checks.
            return model.predict(X.astype(model.dtype, copy=False)).astype(np.float64)
        check_is_fitted(self, "_model")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32), accept_sparse=_SPARSE,
                          ensure_all_finite=False)  # (model.predict checks for NaN and infinity: _FINITE)
        return self._model.predict(X.astype(self._model.dtype, copy=False)).astype(np.float64)


class _SklearnStopping(Callback):
    """scikit-learn's MLP bookkeeping and stopping rule, after each epoch of fastnn's ``fit``:
    ``loss_curve_``, ``n_iter_``, ``t_``; without early stopping, stop once the training loss
    has not improved by ``tol`` for more than ``n_iter_no_change`` epochs; with it, the same on
    the validation score (the estimator puts the best validation weights back after training)."""

    def __init__(self, estimator, x_val, y_val, incremental, w_val=None):
        self.estimator, self.x_val, self.y_val, self.incremental = estimator, x_val, y_val, incremental
        self.w_val = w_val
        self.converged = False

    def on_epoch_end(self, epoch, logs=None):
        est, model = self.estimator, self.model
        loss = float(logs["loss"])
        est.n_iter_ += 1
        est.t_ += est._rows
        est.loss_curve_.append(loss)
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
        if self.incremental:
            return
        if est.early_stopping:
            score = est._validation_score(self.x_val, self.y_val, self.w_val)
            est.validation_scores_.append(score)
            improved = score >= est.best_validation_score_ + est.tol
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                est._best_weights = model.get_weights()
        else:
            improved = loss <= est.best_loss_ - est.tol
            est.best_loss_ = min(est.best_loss_, loss)
        est._no_improvement = 0 if improved else est._no_improvement + 1
        if est._no_improvement > est.n_iter_no_change:
            self.converged = True
            model.stop_training = True


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """``sklearn.neural_network.MLPClassifier`` trained by fastnn: softmax + cross-entropy for
    several classes, a logistic unit + binary cross-entropy for two (and per label for
    multilabel targets). See the module docstring."""

    def fit(self, X, y, sample_weight=None):
        """Train on (X, y); ``sample_weight``: one non-negative weight per row (see the module docstring)."""
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One pass over (X, y); the first call needs ``classes`` (all the labels to expect)."""
        if not hasattr(self, "classes_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            self._binarizer = LabelBinarizer().fit(classes)
            self.classes_ = self._binarizer.classes_
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes={classes!r} differs from the classes of the first partial_fit, {self.classes_}")
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def _fit(self, X, y, incremental, sample_weight=None):
        first = not (incremental and hasattr(self, "_model")) and not (self.warm_start and hasattr(self, "_model"))
        X, y = validate_data(self, X, y, reset=first, multi_output=True, dtype=(np.float64, np.float32),
                             accept_sparse=_SPARSE, ensure_all_finite=False)  # (_FINITE)
        sample_weight = _weights(sample_weight, X)
        labels = _integer_labels(y)
        if labels is None:
            check_classification_targets(y)
        if y.ndim == 2 and y.shape[1] == 1:  # a column: warned about, as scikit-learn's own estimators do
            y = column_or_1d(y, warn=True)
            labels = _integer_labels(y)
        classes = None if labels is None else labels[0]
        if not incremental and (first or not hasattr(self, "_binarizer")):
            self._binarizer = LabelBinarizer().fit(y if classes is None else classes)
            self.classes_ = self._binarizer.classes_
        elif not set(unique_labels(y) if classes is None else classes) <= set(self.classes_):
            raise ValueError(f"y holds labels outside classes {self.classes_}" if incremental else
                             f"warm_start: y holds labels that the first fit did not see, {self.classes_}")
        self._multilabel = classes is None and type_of_target(y).startswith("multilabel")
        if classes is not None and len(self.classes_) > 2:
            # One-hot rows straight from the label indices: LabelBinarizer.transform's, without its
            # three more passes of np.unique over y (about 12 ms of MNIST's 60,000 labels).
            index = labels[1] if np.array_equal(classes, self.classes_) else np.searchsorted(self.classes_, y)
            Y = np.zeros((y.shape[0], len(self.classes_)), dtype=self._dtype(X))
            Y[np.arange(y.shape[0]), index] = 1
        else:
            Y = self._binarizer.transform(y).astype(self._dtype(X))
        n_out = Y.shape[1]
        if first or not hasattr(self, "_model"):
            single = n_out == 1 or self._multilabel
            self.out_activation_ = "logistic" if single else "softmax"
            self._build(X.shape[1], n_out, "sigmoid" if single else "softmax",
                        "binary_crossentropy" if single else "cross_entropy", self._dtype(X), self._batch(X.shape[0]))
        self.n_outputs_ = n_out
        self._epochs(X.astype(self._model.dtype, copy=False), Y, 1 if incremental else self.max_iter, incremental,
                     sample_weight)
        return self

    def _validation_score(self, X, Y, sample_weight=None):
        return float(np.average(self._decode(self._model.predict(X)) == self._decode(Y), weights=sample_weight))

    def _decode(self, P):
        """Indices into ``classes_`` of the rows of P (outputs or binarized targets); 0/1 per
        label for multilabel targets."""
        P = np.asarray(P, dtype=np.float64)
        if self._multilabel:
            return (P > 0.5).astype(int)
        if len(self.classes_) == 1:
            # One class (scikit-learn trains a logistic unit towards 0): every row is that class,
            # whatever the unit says, as LabelBinarizer.inverse_transform decodes it.
            return np.zeros(P.shape[0], dtype=int)
        if P.shape[1] == 1:
            return (P[:, 0] > 0.5).astype(int)
        return P.argmax(axis=1)

    def predict_proba(self, X):
        """Probability of each class (columns in the order of ``classes_``)."""
        P = self._predict_raw(X)
        if P.shape[1] == 1 and not self._multilabel:
            return np.hstack([1.0 - P, P])
        return P

    def predict_log_proba(self, X):
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        P = self._predict_raw(X)
        if self._multilabel:
            return self._binarizer.inverse_transform(P, threshold=0.5)
        return self.classes_[self._decode(P)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """``sklearn.neural_network.MLPRegressor`` trained by fastnn: identity output, squared
    error (scikit-learn's loss, 0.5 * mean squared error, has the same minimizer; fastnn's
    logged ``loss_curve_`` is the mean squared error). See the module docstring."""

    def fit(self, X, y, sample_weight=None):
        """Train on (X, y); ``sample_weight``: one non-negative weight per row (see the module docstring)."""
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    def partial_fit(self, X, y, sample_weight=None):
        """One pass over (X, y)."""
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def _fit(self, X, y, incremental, sample_weight=None):
        first = not (incremental and hasattr(self, "_model")) and not (self.warm_start and hasattr(self, "_model"))
        X, y = validate_data(self, X, y, reset=first, multi_output=True, y_numeric=True,  # (_FINITE:)
                             dtype=(np.float64, np.float32), accept_sparse=_SPARSE, ensure_all_finite=False)
        sample_weight = _weights(sample_weight, X)
        self._y_1d = y.ndim == 1
        Y = np.asarray(y, dtype=self._dtype(X)).reshape(y.shape[0], -1)
        if first or not hasattr(self, "_model"):
            self.out_activation_ = "identity"
            self._build(X.shape[1], Y.shape[1], None, "mse", self._dtype(X), self._batch(X.shape[0]))
        elif Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} outputs, the fitted model {self.n_outputs_}")
        self.n_outputs_ = Y.shape[1]
        self._epochs(X.astype(self._model.dtype, copy=False), Y, 1 if incremental else self.max_iter, incremental,
                     sample_weight)
        return self

    def _validation_score(self, X, Y, sample_weight=None):
        from sklearn.metrics import r2_score
        return float(r2_score(Y, self._model.predict(X), sample_weight=sample_weight))

    def predict(self, X):
        P = self._predict_raw(X)
        return P.ravel() if self._y_1d else P

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


def _integer_labels(y):
    """(the sorted distinct labels, each row's index among them) of a 1-D integer y, from one
    counting pass; None for any other y, which takes scikit-learn's checks. A 1-D integer y is
    'binary' or 'multiclass' to ``type_of_target``, both accepted by
    ``check_classification_targets``; np.unique sorts y, and scikit-learn's checks and
    ``LabelBinarizer`` ran it six times (MNIST's labels: 1 ms each)."""
    if not (isinstance(y, np.ndarray) and y.ndim == 1 and y.dtype.kind in "iu" and y.size):
        return None
    lo, hi = int(y.min()), int(y.max())
    if hi - lo > 4 * y.size + 1024 or hi > np.iinfo(np.intp).max:  # a count per value would cost more than a sort
        return None
    offsets = y.astype(np.intp, copy=False)
    if lo:
        offsets = offsets - lo
    present = np.bincount(offsets) > 0
    return (np.flatnonzero(present) + lo).astype(y.dtype), (np.cumsum(present) - 1)[offsets]


def _weights(sample_weight, X):
    """scikit-learn's checks of ``sample_weight`` (one finite weight >= 0 per row), in X's
    dtype; None stays None."""
    if sample_weight is None:
        return None
    return _check_sample_weight(sample_weight, X, dtype=X.dtype, ensure_non_negative=True)
