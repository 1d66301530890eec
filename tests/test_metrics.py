"""fastnn.metrics against scikit-learn on random data with tied scores, and the argument checks."""
import numpy as np
import pytest

from fastnn import metrics as M

sk = pytest.importorskip("sklearn.metrics")


def binary(seed, n=200, levels=7):
    """0/1 labels and scores with many ties (``levels`` distinct values)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = np.round(np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1) * levels) / levels
    return y, score


def multiclass(seed, n=300, c=4):
    """Labels and probability rows from few distinct patterns: tied scores across rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    raw = rng.integers(1, 4, size=(n, c)) + np.eye(c, dtype=int)[y] * rng.integers(0, 2, n)[:, None]
    return y, raw / raw.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", range(5))
def test_binary_ranking_metrics_equal_sklearn_with_ties(seed):
    y, s = binary(seed)
    assert len(np.unique(s)) < 10  # ties everywhere
    assert M.roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    assert M.pr_auc(y, s) == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)
    # the same as one probability column, as predict returns it for a sigmoid output
    assert M.roc_auc(y.reshape(-1, 1).astype(float), s.reshape(-1, 1)) == pytest.approx(sk.roc_auc_score(y, s))


@pytest.mark.parametrize("seed", range(5))
def test_multiclass_ranking_metrics_equal_sklearn_ovr_macro(seed):
    y, s = multiclass(seed)
    expected = sk.roc_auc_score(y, s, multi_class="ovr", average="macro")
    assert M.roc_auc(y, s) == pytest.approx(expected, abs=1e-12)
    assert M.roc_auc(np.eye(4)[y], s) == pytest.approx(expected, abs=1e-12)  # one-hot truth
    onehot = np.eye(4)[y]
    assert M.pr_auc(y, s) == pytest.approx(sk.average_precision_score(onehot, s, average="macro"), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_two_score_columns_are_a_binary_problem_whose_positive_class_is_column_1(seed):
    """A two-class softmax: every metric takes class 1 as positive, as scikit-learn's binary use."""
    y, s = binary(seed)
    two = np.stack([1.0 - s, s], axis=1)
    for truth in (y, np.eye(2)[y]):  # labels or one-hot rows
        assert M.pr_auc(truth, two) == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)
        assert M.roc_auc(truth, two) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
        pred = two.argmax(axis=1)
        assert M.precision(truth, two) == pytest.approx(sk.precision_score(y, pred))
        assert M.f1(truth, two) == pytest.approx(sk.f1_score(y, pred))
    # not the average over both columns (which differs: column 0 ranks the other class)
    assert sk.average_precision_score(y, s) != pytest.approx(sk.average_precision_score(np.eye(2)[y], two))


@pytest.mark.parametrize("seed", range(5))
def test_counting_metrics_equal_sklearn(seed):
    y, s = binary(seed)
    pred = (s > 0.5).astype(int)
    tn, fp, fn, tp = sk.confusion_matrix(y, pred).ravel()
    assert M.confusion(y, s) == (tp, fp, tn, fn)  # scores are thresholded as fit counts them
    assert M.precision(y, pred) == pytest.approx(sk.precision_score(y, pred))
    assert M.recall(y, pred) == pytest.approx(sk.recall_score(y, pred))
    assert M.f1(y, pred) == pytest.approx(sk.f1_score(y, pred))
    assert M.sensitivity(y, pred) == pytest.approx(sk.recall_score(y, pred))
    assert M.specificity(y, pred) == pytest.approx(sk.recall_score(y, pred, pos_label=0))
    assert M.accuracy(y, pred) == pytest.approx(sk.accuracy_score(y, pred))
    yc, sc = multiclass(seed)
    pc = sc.argmax(axis=1)
    for average in ("macro", "micro", "weighted"):
        for ours, theirs in ((M.precision, sk.precision_score), (M.recall, sk.recall_score), (M.f1, sk.f1_score)):
            assert ours(yc, sc, average=average) == pytest.approx(theirs(yc, pc, average=average, zero_division=0))
    assert M.precision(yc, sc) == pytest.approx(sk.precision_score(yc, pc, average="macro"))
    assert M.accuracy(np.eye(4)[yc], sc) == pytest.approx(sk.accuracy_score(yc, pc))
    for k in (1, 2, 3):
        assert M.top_k_accuracy(yc, sc, k=k) == pytest.approx(sk.top_k_accuracy_score(yc, sc, k=k, labels=range(4)))


def test_undefined_ratios_are_zero_as_zero_division_0():
    y = np.array([0, 0, 0, 0])
    pred = np.array([0, 0, 0, 0])
    assert M.precision(y, pred) == 0.0 == sk.precision_score(y, pred, zero_division=0)
    assert M.recall(y, pred) == 0.0 == sk.recall_score(y, pred, zero_division=0)
    assert M.specificity(y, pred) == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_regression_metrics_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    t = rng.standard_normal((50, 3))
    p = t + 0.3 * rng.standard_normal((50, 3))
    assert M.mae(t, p) == pytest.approx(sk.mean_absolute_error(t, p))
    assert M.mse(t, p) == pytest.approx(sk.mean_squared_error(t, p))
    assert M.rmse(t[:, 0], p[:, 0]) == pytest.approx(np.sqrt(sk.mean_squared_error(t[:, 0], p[:, 0])))
    assert M.r2(t, p) == pytest.approx(sk.r2_score(t, p))
    from sklearn.metrics.pairwise import cosine_similarity as pairwise
    assert M.cosine_similarity(t, p) == pytest.approx(np.mean(np.diag(pairwise(t, p))))


def test_r2_of_a_constant_output_follows_sklearn():
    t = np.array([[1.0, 2.0], [1.0, 3.0], [1.0, 5.0]])
    p = np.array([[1.0, 2.5], [1.0, 3.0], [1.0, 4.0]])
    assert M.r2(t, p) == pytest.approx(sk.r2_score(t, p))


@pytest.mark.parametrize("call, match", [
    (lambda: M.roc_auc([1, 1, 1], [0.2, 0.4, 0.9]), "one class only"),
    (lambda: M.roc_auc([0, 1], [0.2, np.nan]), "NaN"),
    (lambda: M.roc_auc([0, 1, 1], [0.2, 0.5]), "same number of rows"),
    (lambda: M.confusion([0, 2, 1], [0, 1, 1]), "binary"),
    (lambda: M.precision([0, 2, 1], [0, 1, 1], average="binary"), "average='binary'"),
    (lambda: M.precision([0, 1], [0, 1], average="samples"), "average must be"),
    (lambda: M.top_k_accuracy([0, 1], [[0.2, 0.8], [0.5, 0.5]], k=0), "k must be"),
    (lambda: M.top_k_accuracy([0, 5], [[0.2, 0.8], [0.5, 0.5]]), r"labels in \[0, 2\)"),
    (lambda: M.accuracy([0.5, 1.0], [0, 1]), "class labels"),
    (lambda: M.mae(np.zeros((3, 2)), np.zeros((3, 1))), "same shape"),
    (lambda: M.mae([], []), "non-empty"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
