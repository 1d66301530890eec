"""fastnn.sklearn: scikit-learn's own estimator checks, Pipeline / GridSearchCV / clone, the
fitted attributes, partial_fit, warm_start, early stopping, pickling, and the L2 penalty."""
import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastnn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


@parametrize_with_checks([MLPClassifier(), MLPRegressor()])
@pytest.mark.slow  # scikit-learn's whole check_estimator suite, twice
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def blobs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.choice(np.array(["cat", "dog", "eel"]), n)
    x = rng.normal(size=(n, 6)) + 2.0 * (labels[:, None] == np.array(["cat", "dog", "eel", "x", "y", "z"]))
    return x, labels


def test_fit_predict_and_fitted_attributes():
    x, y = blobs()
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=40, learning_rate_init=0.02,
                        random_state=0).fit(x, y)
    assert list(clf.classes_) == ["cat", "dog", "eel"]
    proba = clf.predict_proba(x)
    assert proba.shape == (300, 3) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert set(clf.predict(x)) <= set(clf.classes_)
    assert clf.score(x, y) > 0.85
    assert clf.n_iter_ == len(clf.loss_curve_) <= 40 and clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert [c.shape for c in clf.coefs_] == [(6, 16), (16, 3)] and clf.n_features_in_ == 6
    assert clf.out_activation_ == "softmax" and clf.n_layers_ == 3


@pytest.mark.parametrize("values", [[-128, 3, 127], [2, 9], [7], [0, 1, 2, 3, 40, 41]])
@pytest.mark.parametrize("dtype", [np.int8, np.int64, np.uint16])
def test_integer_labels_train_as_through_scikit_learns_checks(values, dtype, monkeypatch):
    # A 1-D integer y takes a counting pass of its own (sklearn._integer_labels) instead of
    # scikit-learn's checks and LabelBinarizer's transform; with that pass off, the same y takes those.
    values = np.array(values, dtype=np.int64)
    if dtype == np.uint16:
        values = values - values.min()
    x, names = blobs(120)
    y = values[np.searchsorted(np.unique(names), names) % len(values)].astype(dtype)
    given = np.r_[values, 99].astype(dtype)  # partial_fit's classes: more than y holds

    def fits():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            full = MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, random_state=0).fit(x, y)
            part = MLPClassifier(hidden_layer_sizes=(5,), random_state=0).partial_fit(x, y, classes=given)
        return full, part

    fast = fits()
    monkeypatch.setattr("fastnn.sklearn._integer_labels", lambda y: None)
    slow = fits()
    for a, b in zip(fast, slow):
        assert a.classes_.dtype == b.classes_.dtype == y.dtype
        np.testing.assert_array_equal(a.classes_, b.classes_)
        for wa, wb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
            np.testing.assert_array_equal(wa, wb)
        np.testing.assert_array_equal(a.predict(x), b.predict(x))
    np.testing.assert_array_equal(fast[0].classes_, np.unique(y))
    assert fast[1].coefs_[-1].shape[1] == (len(given) if len(given) > 2 else 1)  # two: one logistic unit


def test_binary_classes_get_a_logistic_unit_and_two_probability_columns():
    x, y = blobs()
    y = (y == "dog").astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0).fit(x, y)
    assert clf.out_activation_ == "logistic" and clf.coefs_[-1].shape == (8, 1)
    proba = clf.predict_proba(x)
    assert proba.shape == (300, 2) and np.allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.predict(x), (proba[:, 1] > 0.5).astype(int))


def test_same_random_state_same_model_and_clone_is_unfitted():
    x, y = blobs()
    a = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=3).fit(x, y)
    b = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=3).fit(x, y)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))
    c = clone(a)
    assert c.get_params() == a.get_params() and not hasattr(c, "classes_")


def test_in_a_pipeline_and_a_grid_search():
    x, y = blobs()
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=20, learning_rate_init=0.02, random_state=0))
    search = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(4,), (16,)],
                                 "mlpclassifier__alpha": [1e-4, 1e-2]}, cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(x, y)
    assert search.best_score_ > 0.8 and len(search.cv_results_["params"]) == 4
    assert search.predict(x).shape == (300,)


def test_partial_fit_needs_classes_first_and_then_trains_one_pass_per_call():
    x, y = blobs()
    clf = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.02, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(x, y)
    for _ in range(15):
        clf.partial_fit(x[:150], y[:150], classes=["cat", "dog", "eel"])
        clf.partial_fit(x[150:], y[150:])
    assert clf.n_iter_ == 30 and clf.score(x, y) > 0.85
    with pytest.raises(ValueError, match="outside classes"):
        clf.partial_fit(x[:5], np.array(["cat", "cow", "eel", "dog", "cat"]))


def test_warm_start_continues_and_early_stopping_stops():
    x, y = blobs()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, warm_start=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
        first = clf.coefs_[0].copy()
        clf.fit(x, y)
    assert clf.n_iter_ == 6 and len(clf.loss_curve_) == 6 and not np.array_equal(first, clf.coefs_[0])
    stop = MLPClassifier(hidden_layer_sizes=(8,), max_iter=500, early_stopping=True, n_iter_no_change=3,
                         random_state=0).fit(x, y)
    assert stop.n_iter_ < 500 and len(stop.validation_scores_) == stop.n_iter_
    assert stop.best_validation_score_ == max(stop.validation_scores_)


def test_max_iter_without_convergence_warns_as_sklearn():
    x, y = blobs()
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(2\\) reached"):
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0).fit(x, y)


def test_regressor_single_and_multi_output():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * rng.normal(size=400)
    reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=100, learning_rate_init=0.01, random_state=0).fit(x, y)
    assert reg.predict(x).shape == (400,) and reg.score(x, y) > 0.95
    y2 = np.stack([y, -y], axis=1)
    reg2 = MLPRegressor(hidden_layer_sizes=(32,), max_iter=100, learning_rate_init=0.01, random_state=0).fit(x, y2)
    assert reg2.predict(x).shape == (400, 2) and reg2.score(x, y2) > 0.95


def test_alpha_is_sklearns_l2_penalty():
    """sklearn's batch loss adds 0.5 * alpha * sum(W²) / batch rows: with the weights fixed
    (learning rate 0, SGD) the logged loss grows by exactly that over the unpenalized one."""
    x, y = blobs(n=100)
    losses = {}
    for alpha in (0.0, 2.0):
        clf = MLPClassifier(hidden_layer_sizes=(5,), solver="sgd", learning_rate_init=1e-12, momentum=0.0,
                            alpha=alpha, batch_size=20, max_iter=1, shuffle=False, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x, y)
        losses[alpha] = clf.loss_curve_[0]
        weights = clf.coefs_
    penalty = 0.5 * 2.0 * sum(float(np.sum(w.astype(np.float64) ** 2)) for w in weights) / 20
    assert losses[2.0] - losses[0.0] == pytest.approx(penalty, rel=1e-5)


def test_pickle_round_trip_predicts_the_same():
    x, y = blobs()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(x), clf.predict_proba(x))
    again.partial_fit(x, y)  # and it still trains


@pytest.mark.parametrize("params, match", [
    ({"solver": "lbfgs"}, "solver must be 'adam' or 'sgd'"),
    ({"activation": "swish"}, "activation must be one of"),
    ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes must be positive"),
    ({"learning_rate_init": 0.0}, "learning_rate_init must be > 0"),
    ({"batch_size": 0}, "batch_size must be 'auto'"),
    ({"max_iter": 0}, "max_iter must be an integer >= 1"),
])
def test_bad_parameters_are_value_errors_at_fit(params, match):
    x, y = blobs(n=30)
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**params).fit(x, y)


@pytest.mark.parametrize("random_state", [0, 1, 2])
def test_a_single_class_predicts_that_class_as_sklearn(random_state):
    """One class in y: scikit-learn's MLPClassifier trains one logistic unit towards 0 and
    predicts the class whatever the unit says; after a short training the unit is still near
    0.5, above it for some rows, which must not index a second class that does not exist."""
    from sklearn.neural_network import MLPClassifier as SklearnMLPClassifier
    rng = np.random.default_rng(random_state)
    x, y = rng.normal(size=(40, 3)), np.full(40, "only")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=random_state).fit(x, y)
        ref = SklearnMLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=random_state).fit(x, y)
        stop = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, early_stopping=True,
                             random_state=random_state).fit(x, y)
    np.testing.assert_array_equal(clf.predict(x), ref.predict(x))
    assert list(clf.classes_) == list(ref.classes_) == ["only"] and clf.score(x, y) == 1.0
    assert clf.predict_proba(x).shape == ref.predict_proba(x).shape == (40, 2)
    assert clf.out_activation_ == ref.out_activation_ == "logistic"
    assert stop.validation_scores_ == [1.0, 1.0, 1.0]  # as scikit-learn's: every row is the class


def test_early_stopping_at_max_iter_keeps_the_best_validation_weights_as_sklearn():
    """scikit-learn puts back the weights of the best validation score whenever early_stopping
    is on, also when training ends at max_iter before the stopping rule fires. The first epochs
    of a longer training are those of a shorter one (same random_state), so the model kept must
    be the one trained for exactly the best epoch's count."""
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array(["cat", "dog", "eel"]), 200)
    x = rng.normal(size=(200, 6)) + 0.7 * (labels[:, None] == np.array(["cat", "dog", "eel", "x", "y", "z"]))
    params = dict(hidden_layer_sizes=(32,), early_stopping=True, learning_rate_init=0.05, random_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(max_iter=8, **params).fit(x, labels)
        best_epochs = int(np.argmax(clf.validation_scores_)) + 1  # the first best, as scikit-learn keeps
        best = MLPClassifier(max_iter=best_epochs, **params).fit(x, labels)
    assert clf.n_iter_ == 8 and best_epochs < 8  # ended at max_iter, not by the stopping rule
    assert clf.validation_scores_[-1] < clf.best_validation_score_ == max(clf.validation_scores_)
    assert best.validation_scores_ == clf.validation_scores_[:best_epochs]
    for mine, kept in zip(clf.coefs_ + clf.intercepts_, best.coefs_ + best.intercepts_):
        np.testing.assert_array_equal(mine, kept)
    np.testing.assert_array_equal(clf.predict_proba(x), best.predict_proba(x))


def test_a_few_rows_take_the_short_path_with_the_same_answers_and_checks():
    from fastnn.sklearn import MLPClassifier as Ours
    rng = np.random.default_rng(5)
    X, y = rng.random((60, 7)), rng.integers(0, 3, 60)
    clf = Ours(hidden_layer_sizes=(9,), max_iter=3, random_state=0).fit(X, y)
    full = clf.predict_proba(X)
    for n in (1, 4):
        # The full pass runs 60 rows as one product, the short one row by row: float32 rounding.
        np.testing.assert_allclose(clf.predict_proba(X[:n]), full[:n], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(clf.predict(X[:n]), clf.classes_[full[:n].argmax(axis=1)])
    bad = X[:1].copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.predict(bad)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:1, :5])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sparse_x_fits_and_predicts_as_its_dense_twin():
    import scipy.sparse as sp
    x, y = blobs()
    x = np.where(np.abs(x) > 2.5, x, 0.0)  # mostly zeros: the zero-skipping first layer
    dense = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(x, y)
    sparse = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(sp.csc_matrix(x), y)
    # Both skip zeros, the one from its dense rows and the other from CSR: the same sums.
    assert all(m._model._backend._csr_batch[1].size for m in (dense, sparse))
    for a, b in zip(dense.coefs_, sparse.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sparse.predict_proba(sp.coo_matrix(x)), dense.predict_proba(x), rtol=1e-9)
