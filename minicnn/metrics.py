"""Classification metrics: a thin, warning-free layer over ``sklearn.metrics``.

Nothing here re-derives a metric: every number comes from scikit-learn, called with the full
list of class labels (so a class that is absent from a test set, or never predicted, still gets
its row, its column and its zeros) and ``zero_division=0`` (so an undefined precision or recall,
e.g. the precision of a class the model never predicts, is reported as 0 without the
``UndefinedMetricWarning`` scikit-learn would otherwise print).

Conventions: ``y_true`` and ``y_pred`` are integer class indices in ``[0, num_classes)``;
``probs`` is an (N, num_classes) array of class scores (probabilities from
``model.predict``); ``class_names`` lists the dataset's class names in index order (the
loaders return them; ``None`` means "0", "1", ...).

:func:`summarize` gathers everything into one JSON-serializable dict (what ``metrics.json`` of a
report holds).
"""

from __future__ import annotations

import math

import numpy as np

from .validation import is_int

__all__ = [
    "accuracy", "classification_report", "confident_mistakes", "confusion_matrix",
    "example_per_class", "most_confused", "per_class_metrics", "summarize", "top_k_accuracy",
]


# -- input checks -------------------------------------------------------------------------------

def _labels(values, what: str, where: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{where}: {what} must be a 1-D array of class indices, "
                         f"got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise TypeError(f"{where}: {what} must be integer class indices, got dtype {array.dtype}")
    return array.astype(np.int64)


def _check_pair(y_true, y_pred, num_classes, where: str):
    """Validate (y_true, y_pred) and work out the class count."""
    y_true = _labels(y_true, "y_true", where)
    y_pred = _labels(y_pred, "y_pred", where)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{where}: y_true and y_pred must have the same length, got "
                         f"{len(y_true)} and {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError(f"{where}: no samples (y_true is empty)")
    seen = int(max(y_true.max(), y_pred.max())) + 1
    num_classes = seen if num_classes is None else int(num_classes)
    low = int(min(y_true.min(), y_pred.min()))
    if low < 0 or seen > num_classes:
        raise ValueError(f"{where}: class indices must be in [0, {num_classes - 1}] for "
                         f"{num_classes} classes, got values from {low} to {seen - 1}")
    return y_true, y_pred, num_classes


def _class_names(class_names, num_classes: int | None, where: str) -> list[str]:
    if class_names is None:
        if num_classes is None:
            raise ValueError(f"{where}: give class_names or num_classes")
        return [str(i) for i in range(num_classes)]
    names = [str(name) for name in class_names]
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"{where}: {len(names)} class names for {num_classes} classes")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: class names must be distinct, got {names}")
    return names


def _check_probs(probs, n_samples: int, where: str) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[0] != n_samples:
        raise ValueError(f"{where}: expected class scores of shape ({n_samples}, classes), "
                         f"got {probs.shape}")
    if probs.dtype.kind != "f" or not np.isfinite(probs).all():
        raise ValueError(f"{where}: class scores must be finite floats")
    return probs


# -- single metrics -----------------------------------------------------------------------------

def accuracy(y_true, y_pred) -> float:
    """Fraction of correct predictions (``sklearn.metrics.accuracy_score``)."""
    from sklearn.metrics import accuracy_score

    y_true, y_pred, _ = _check_pair(y_true, y_pred, None, "accuracy")
    return float(accuracy_score(y_true, y_pred))


def top_k_accuracy(y_true, probs, k: int = 5) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores.

    ``sklearn.metrics.top_k_accuracy_score`` with every class label given. With ``k`` at least
    the number of classes every sample counts as correct, so 1.0 is returned directly (sklearn
    would warn that the score is trivially perfect).
    """
    from sklearn.metrics import top_k_accuracy_score

    y_true = _labels(y_true, "y_true", "top_k_accuracy")
    probs = _check_probs(probs, len(y_true), "top_k_accuracy")
    if not is_int(k) or k < 1:
        raise ValueError(f"top_k_accuracy: k must be an int >= 1, got {k!r}")
    _check_pair(y_true, y_true, probs.shape[1], "top_k_accuracy")
    num_classes = probs.shape[1]
    if k >= num_classes:
        return 1.0
    # sklearn wants the binary case as the score of the positive class only
    scores = probs[:, 1] if num_classes == 2 else probs
    return float(top_k_accuracy_score(y_true, scores, k=int(k), labels=np.arange(num_classes)))


def log_loss(y_true, probs) -> float:
    """Mean cross-entropy of the class probabilities (``sklearn.metrics.log_loss`` with every
    class label given). Rows are renormalized in float64 first: float32 probabilities sum to 1
    only to within rounding, which sklearn would warn about."""
    from sklearn.metrics import log_loss as sk_log_loss

    y_true = _labels(y_true, "y_true", "log_loss")
    probs = _check_probs(probs, len(y_true), "log_loss").astype(np.float64)
    _check_pair(y_true, probs.argmax(axis=1), probs.shape[1], "log_loss")
    probs /= probs.sum(axis=1, keepdims=True)
    return float(sk_log_loss(y_true, probs, labels=np.arange(probs.shape[1])))


def confusion_matrix(y_true, y_pred, num_classes: int | None = None,
                     normalize: str | None = None) -> np.ndarray:
    """(K, K) matrix: entry [i, j] counts samples of true class i predicted as class j.

    ``normalize="true"`` divides each row by its count (row i is then the distribution of the
    predictions for class i; its diagonal is the recall); a class with no samples gets a row of
    zeros. ``"pred"`` normalizes columns and ``"all"`` the whole matrix, as in sklearn.
    """
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    if normalize not in (None, "true", "pred", "all"):
        raise ValueError(f"confusion_matrix: normalize must be None, 'true', 'pred' or 'all', "
                         f"got {normalize!r}")
    y_true, y_pred, num_classes = _check_pair(y_true, y_pred, num_classes, "confusion_matrix")
    return sk_confusion_matrix(y_true, y_pred, labels=np.arange(num_classes), normalize=normalize)


def per_class_metrics(y_true, y_pred, class_names=None, num_classes: int | None = None) -> dict:
    """Precision, recall, F1 and support of every class, and their macro/weighted averages.

    Returns ``{"class_names": [...], "precision": array (K,), "recall": ..., "f1": ...,
    "support": int array (K,), "macro": {"precision", "recall", "f1"}, "weighted": {...}}``.
    Macro averages weigh every class equally (a rare class counts as much as a common one);
    weighted averages weigh each class by its support.
    """
    from sklearn.metrics import precision_recall_fscore_support

    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    y_true, y_pred, num_classes = _check_pair(y_true, y_pred, num_classes, "per_class_metrics")
    names = _class_names(class_names, num_classes, "per_class_metrics")
    labels = np.arange(num_classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0)
    result = {"class_names": names, "precision": precision, "recall": recall, "f1": f1,
              "support": support.astype(np.int64)}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                     average=average, zero_division=0)
        result[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    return result


def classification_report(y_true, y_pred, class_names=None, num_classes: int | None = None,
                          output_dict: bool = False, digits: int = 4):
    """sklearn's classification report (per-class precision/recall/F1/support, accuracy,
    macro and weighted averages) as text, or as a dict with ``output_dict=True``."""
    from sklearn.metrics import classification_report as sk_report

    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    y_true, y_pred, num_classes = _check_pair(y_true, y_pred, num_classes,
                                              "classification_report")
    names = _class_names(class_names, num_classes, "classification_report")
    return sk_report(y_true, y_pred, labels=np.arange(num_classes), target_names=names,
                     digits=digits, output_dict=output_dict, zero_division=0)


def most_confused(matrix, class_names=None, top: int = 10) -> list[dict]:
    """The largest off-diagonal cells of a confusion matrix of counts, largest first:
    ``[{"true": name, "predicted": name, "count": n, "fraction_of_true": n / row total}]``."""
    matrix = np.asarray(matrix)
    names = _class_names(class_names, matrix.shape[0], "most_confused")
    off = matrix.astype(np.float64).copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:top]
    rows = matrix.sum(axis=1)
    pairs = []
    for flat in order:
        i, j = np.unravel_index(flat, matrix.shape)
        if off[i, j] <= 0:
            break
        pairs.append({"true": names[i], "predicted": names[j], "count": int(matrix[i, j]),
                      "fraction_of_true": float(matrix[i, j] / rows[i]) if rows[i] else 0.0})
    return pairs


def confident_mistakes(y_true, probs, top: int | None = None) -> np.ndarray:
    """Indices of the misclassified samples, most confident first (by the probability of the
    wrong predicted class), at most ``top`` of them."""
    y_true = _labels(y_true, "y_true", "confident_mistakes")
    probs = _check_probs(probs, len(y_true), "confident_mistakes")
    y_pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    confidence = probs[wrong, y_pred[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")]
    return order if top is None else order[:top]


def example_per_class(y_true, y_pred, num_classes: int, limit: int = 16) -> np.ndarray:
    """Indices of one sample per class (of the first ``limit`` classes that have any): the first
    one classified right, else (a class never classified right) the first one of the class."""
    picks = []
    for c in range(num_classes):
        members = np.flatnonzero(np.asarray(y_true) == c)
        hits = members[np.asarray(y_pred)[members] == c]
        if members.size:
            picks.append(int(hits[0] if hits.size else members[0]))
        if len(picks) == limit:
            break
    return np.asarray(picks, dtype=np.int64)


# -- everything at once -------------------------------------------------------------------------

def summarize(y_true, probs, class_names=None, top_k=(1, 3, 5)) -> dict:
    """Every metric of a classifier's scores on a labelled set, as plain JSON values.

    ``probs`` are the class probabilities (``model.predict(x)``); the prediction is their
    argmax. Keys: ``num_samples``, ``num_classes``, ``class_names``, ``accuracy``,
    ``log_loss`` (mean cross-entropy of the probabilities), ``top_k_accuracy`` ({"1": ..}),
    ``macro_avg`` and ``weighted_avg`` ({precision, recall, f1}), ``per_class`` (one dict per
    class: name, precision, recall, f1, support, predicted), ``confusion_matrix`` (counts),
    ``confusion_matrix_normalized`` (rows sum to 1), ``most_confused`` pairs and
    ``confidence`` (mean probability of the predicted class on correct and on wrong
    predictions).
    """
    y_true = _labels(y_true, "y_true", "summarize")
    probs = _check_probs(probs, len(y_true), "summarize")
    num_classes = probs.shape[1]
    names = _class_names(class_names, num_classes, "summarize")
    y_pred = probs.argmax(axis=1)
    y_true, y_pred, _ = _check_pair(y_true, y_pred, num_classes, "summarize")
    per_class = per_class_metrics(y_true, y_pred, names)
    counts = confusion_matrix(y_true, y_pred, num_classes)
    confidence = probs[np.arange(len(y_pred)), y_pred]
    correct = y_pred == y_true

    def mean_or_none(values):
        return float(values.mean()) if values.size else None

    return {
        "num_samples": int(len(y_true)),
        "num_classes": int(num_classes),
        "class_names": names,
        "accuracy": accuracy(y_true, y_pred),
        "log_loss": log_loss(y_true, probs),
        "top_k_accuracy": {str(k): top_k_accuracy(y_true, probs, k) for k in top_k
                           if k <= num_classes},
        "macro_avg": per_class["macro"],
        "weighted_avg": per_class["weighted"],
        "per_class": [
            {"name": names[i], "precision": float(per_class["precision"][i]),
             "recall": float(per_class["recall"][i]), "f1": float(per_class["f1"][i]),
             "support": int(per_class["support"][i]), "predicted": int(counts[:, i].sum())}
            for i in range(num_classes)
        ],
        "confusion_matrix": counts.tolist(),
        "confusion_matrix_normalized": [
            [float(v) if math.isfinite(v) else 0.0 for v in row]
            for row in confusion_matrix(y_true, y_pred, num_classes, normalize="true")
        ],
        "most_confused": most_confused(counts, names),
        "confidence": {"correct": mean_or_none(confidence[correct]),
                       "wrong": mean_or_none(confidence[~correct]),
                       "num_wrong": int((~correct).sum())},
    }
