"""minicnn.metrics equals scikit-learn on fixed inputs, with no warnings leaking out."""

import json
import warnings

import numpy as np
import pytest
import sklearn.metrics as skm

from minicnn import metrics

# Every test here fails on any warning: a class that is never predicted (precision 0/0) or
# absent from y_true (recall 0/0) must not make scikit-learn print UndefinedMetricWarning.
pytestmark = pytest.mark.filterwarnings("error")

NAMES = ["cat", "dog", "bird", "fish"]
# 4 classes: "fish" (3) is never predicted; every class occurs in y_true
Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 0])
Y_PRED = np.array([0, 1, 0, 1, 1, 2, 1, 2, 0, 2, 1, 0])
PROBS = np.array([
    [0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1], [0.6, 0.2, 0.1, 0.1], [0.1, 0.8, 0.05, 0.05],
    [0.2, 0.6, 0.1, 0.1], [0.1, 0.3, 0.4, 0.2], [0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1],
    [0.5, 0.1, 0.3, 0.1], [0.1, 0.1, 0.5, 0.3], [0.2, 0.4, 0.1, 0.3], [0.9, 0.05, 0.03, 0.02],
])


def sk(fn, *args, **kwargs):
    """Call scikit-learn for the expected value; its own zero-division warnings are not ours."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_fixture_is_what_the_tests_claim():
    assert (PROBS.argmax(axis=1) == Y_PRED).all()
    assert 3 not in Y_PRED and set(Y_TRUE) == {0, 1, 2, 3}


def test_accuracy_equals_sklearn():
    assert metrics.accuracy(Y_TRUE, Y_PRED) == skm.accuracy_score(Y_TRUE, Y_PRED) == 7 / 12


def test_per_class_metrics_equal_sklearn_including_a_class_never_predicted():
    result = metrics.per_class_metrics(Y_TRUE, Y_PRED, NAMES)
    p, r, f, s = sk(skm.precision_recall_fscore_support, Y_TRUE, Y_PRED, labels=range(4),
                    zero_division=0)
    np.testing.assert_array_equal(result["precision"], p)
    np.testing.assert_array_equal(result["recall"], r)
    np.testing.assert_array_equal(result["f1"], f)
    np.testing.assert_array_equal(result["support"], s)
    # by hand: cat predicted 4 times, 3 right (of 4 cats); fish never predicted -> 0, not NaN
    assert result["precision"][0] == 0.75 and result["recall"][0] == 0.75
    assert result["precision"][3] == 0.0 and result["recall"][3] == 0.0 and result["f1"][3] == 0.0
    assert list(result["support"]) == [4, 4, 2, 2]
    assert result["class_names"] == NAMES
    for average in ("macro", "weighted"):
        p, r, f, _ = sk(skm.precision_recall_fscore_support, Y_TRUE, Y_PRED, labels=range(4),
                        average=average, zero_division=0)
        assert result[average] == pytest.approx({"precision": p, "recall": r, "f1": f}, abs=0)
    assert result["macro"]["f1"] == pytest.approx(np.mean(result["f1"]))


def test_a_class_absent_from_y_true_gets_zero_recall_without_warnings():
    y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1])  # class 2 never true
    result = metrics.per_class_metrics(y_true, y_pred, num_classes=3)
    assert result["recall"][2] == 0.0 and result["precision"][2] == 0.0
    assert result["support"][2] == 0
    assert result["class_names"] == ["0", "1", "2"]
    matrix = metrics.confusion_matrix(y_true, y_pred, 3, normalize="true")
    np.testing.assert_array_equal(matrix[2], [0, 0, 0])  # an empty row stays zeros, no NaN


def test_confusion_matrix_counts_and_row_normalized_equal_sklearn():
    counts = metrics.confusion_matrix(Y_TRUE, Y_PRED, 4)
    np.testing.assert_array_equal(counts, skm.confusion_matrix(Y_TRUE, Y_PRED, labels=range(4)))
    assert counts[1, 2] == 1 and counts[3].tolist() == [0, 1, 1, 0]
    normalized = metrics.confusion_matrix(Y_TRUE, Y_PRED, 4, normalize="true")
    np.testing.assert_allclose(normalized, skm.confusion_matrix(Y_TRUE, Y_PRED, labels=range(4),
                                                                 normalize="true"))
    np.testing.assert_allclose(normalized.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.diag(normalized),
                               metrics.per_class_metrics(Y_TRUE, Y_PRED, NAMES)["recall"])
    # a class count larger than any label seen adds empty rows and columns
    assert metrics.confusion_matrix(Y_TRUE, Y_PRED, 6).shape == (6, 6)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_accuracy_equals_sklearn(k):
    expected = skm.top_k_accuracy_score(Y_TRUE, PROBS, k=k, labels=range(4))
    assert metrics.top_k_accuracy(Y_TRUE, PROBS, k) == expected
    if k == 1:
        assert expected == metrics.accuracy(Y_TRUE, Y_PRED)


def test_top_k_accuracy_edge_cases():
    assert metrics.top_k_accuracy(Y_TRUE, PROBS, 4) == 1.0  # k >= classes: no sklearn warning
    assert metrics.top_k_accuracy(Y_TRUE, PROBS, 10) == 1.0
    binary_true = np.array([0, 1, 1, 0])
    binary = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.4, 0.6]])
    assert metrics.top_k_accuracy(binary_true, binary, 1) == 0.5
    with pytest.raises(ValueError, match="k must be"):
        metrics.top_k_accuracy(Y_TRUE, PROBS, 0)


def test_classification_report_text_and_dict_equal_sklearn():
    text = metrics.classification_report(Y_TRUE, Y_PRED, NAMES)
    assert text == sk(skm.classification_report, Y_TRUE, Y_PRED, labels=range(4),
                      target_names=NAMES, digits=4, zero_division=0)
    assert "fish" in text and "macro avg" in text
    as_dict = metrics.classification_report(Y_TRUE, Y_PRED, NAMES, output_dict=True)
    assert as_dict == sk(skm.classification_report, Y_TRUE, Y_PRED, labels=range(4),
                         target_names=NAMES, output_dict=True, zero_division=0)
    assert as_dict["fish"]["precision"] == 0.0 and as_dict["fish"]["support"] == 2


def test_summarize_is_json_and_consistent():
    summary = metrics.summarize(Y_TRUE, PROBS, NAMES)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["num_samples"] == 12 and summary["num_classes"] == 4
    assert summary["accuracy"] == 7 / 12
    assert summary["top_k_accuracy"] == {
        "1": 7 / 12, "3": skm.top_k_accuracy_score(Y_TRUE, PROBS, k=3, labels=range(4))}
    assert summary["log_loss"] == pytest.approx(skm.log_loss(Y_TRUE, PROBS, labels=range(4)))
    fish = summary["per_class"][3]
    assert fish == {"name": "fish", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2,
                    "predicted": 0}
    assert summary["confusion_matrix"] == skm.confusion_matrix(Y_TRUE, Y_PRED).tolist()
    assert summary["macro_avg"]["f1"] == pytest.approx(
        sk(skm.f1_score, Y_TRUE, Y_PRED, average="macro", zero_division=0))
    # the most frequent confusion first; counts add up to the number of errors
    pairs = summary["most_confused"]
    assert sum(p["count"] for p in pairs) == 5 and all(p["count"] == 1 for p in pairs)
    wrong = Y_PRED != Y_TRUE
    assert summary["confidence"]["num_wrong"] == 5
    assert summary["confidence"]["wrong"] == pytest.approx(PROBS.max(axis=1)[wrong].mean())
    assert summary["confidence"]["correct"] == pytest.approx(PROBS.max(axis=1)[~wrong].mean())


def test_most_confused_orders_by_count():
    matrix = np.array([[5, 3, 0], [1, 7, 0], [0, 4, 2]])
    pairs = metrics.most_confused(matrix, ["a", "b", "c"])
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("c", "b", 4), ("a", "b", 3), ("b", "a", 1)]
    assert pairs[0]["fraction_of_true"] == pytest.approx(4 / 6)


def test_confident_mistakes_most_confident_first():
    order = metrics.confident_mistakes(Y_TRUE, PROBS)
    # errors: sample 1 (0.5), 5 (0.4), 8 (0.5), 9 (0.5), 10 (0.4); stable order among ties
    assert order.tolist() == [1, 8, 9, 5, 10]
    confidence = PROBS[order, PROBS[order].argmax(axis=1)]
    assert (np.diff(confidence) <= 0).all()
    assert metrics.confident_mistakes(Y_TRUE, PROBS, 2).tolist() == order[:2].tolist()


def test_example_per_class_picks_a_right_one_where_there_is_one():
    y_true = np.array([2, 0, 0, 1, 2, 1, 0])
    y_pred = np.array([2, 1, 0, 0, 2, 0, 0])  # class 1 is never classified right
    assert metrics.example_per_class(y_true, y_pred, 4).tolist() == [2, 3, 0]  # class 3: none
    assert metrics.example_per_class(y_true, y_pred, 4, limit=2).tolist() == [2, 3]


def test_clear_errors():
    with pytest.raises(ValueError, match="same length"):
        metrics.accuracy([0, 1], [0])
    with pytest.raises(ValueError, match=r"in \[0, 3\]"):
        metrics.confusion_matrix([0, 4], [0, 1], 4)
    with pytest.raises(TypeError, match="integer class indices"):
        metrics.accuracy(np.array([0.0, 1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="3 class names for 4 classes"):
        metrics.per_class_metrics(Y_TRUE, Y_PRED, NAMES[:3], num_classes=4)
    with pytest.raises(ValueError, match="shape"):
        metrics.summarize(Y_TRUE, PROBS[:5], NAMES)
    with pytest.raises(ValueError, match="normalize"):
        metrics.confusion_matrix(Y_TRUE, Y_PRED, normalize="rows")


def test_log_loss_is_sklearns_and_warning_free_on_float32_softmax_outputs():
    import warnings

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((200, 10)).astype(np.float32) * 4
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # float32: sums ~1
    labels = rng.integers(0, 10, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = metrics.log_loss(labels, probs)
    expected = -np.log(probs.astype(np.float64)[np.arange(200), labels]).mean()
    assert value == pytest.approx(expected, rel=1e-6)
    assert metrics.summarize(labels, probs)["log_loss"] == value
    certain_and_wrong = np.eye(3)[[1, 2]]  # probability 0 for the true class: clipped, finite
    assert np.isfinite(metrics.log_loss([0, 0], certain_and_wrong))
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 2\]"):
        metrics.log_loss([0, 5], certain_and_wrong)
