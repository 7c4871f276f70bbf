"""Linear probe on frozen embeddings: splits, fit and metrics, in scikit-learn (no Ray).

Protocol (docs/protocols.md, "Linear probe"): standardised features, a logistic-regression classifier, train/test
split stratified by label and grouped (no patient/slide/field on both sides), the
regularisation strength chosen on a validation split carved from the training part, then
refit on all training data. Metrics: balanced accuracy and macro one-vs-rest AUC. ``linear_head``
folds the refit probe into the head file ``sslray explain`` reads (``sslray.artifacts.linear_head``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from sslray.artifacts.linear_head import LinearHead
from sslray.evaluate.metrics import auc


@dataclass
class Split:
    train: np.ndarray
    test: np.ndarray


def grouped_split(labels: np.ndarray, groups: np.ndarray | None, test_fraction: float, seed: int) -> Split:
    """One stratified (and, with groups, grouped) split holding out about ``test_fraction``.

    Small sets get fewer folds (a larger test share) rather than an empty class: the number
    of folds never exceeds the number of groups (or samples) of the rarest class.
    """
    units = groups if groups is not None else np.arange(len(labels))
    per_class = {str(c): len(np.unique(units[labels == c])) for c in np.unique(labels)}
    if len(per_class) < 2:  # scikit-learn would fail later, once per fit, with its own error
        raise ValueError(f"the labels hold a single class ({', '.join(per_class) or 'none'}); a probe needs at least 2")
    rarest = min(per_class, key=per_class.get)
    if per_class[rarest] < 2:
        what = "groups" if groups is not None else "samples"
        raise ValueError(f"class {rarest!r} has only {per_class[rarest]} of its {what}; a split needs at least 2")
    n_splits = int(min(max(2, round(1 / test_fraction)), per_class[rarest]))
    x = np.zeros(len(labels))
    if groups is not None:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        train, test = next(splitter.split(x, labels, groups))
    else:
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        train, test = next(splitter.split(x, labels))
    return Split(np.sort(train), np.sort(test))


def fit_probe(features: np.ndarray, labels: np.ndarray, c: float, max_iter: int = 2000, seed: int = 0) -> Pipeline:
    clf = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    return make_pipeline(StandardScaler(), clf).fit(features, labels)


def probe_metrics(model: Pipeline, features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    predicted = model.predict(features)
    metrics = {"balanced_accuracy": float(balanced_accuracy_score(labels, predicted))}
    index = {c: i for i, c in enumerate(model.classes_)}
    unseen = sorted(set(labels) - set(index))
    if unseen:
        raise ValueError(f"labels {unseen} were not among the training classes {list(model.classes_)}")
    targets = np.array([index[v] for v in labels])
    metrics["macro_auc"] = auc(targets, model.predict_proba(features))  # columns follow model.classes_
    return metrics


def class_proba(model: Pipeline, classes: list[str], features: np.ndarray) -> np.ndarray:
    """``model``'s probabilities with one column per entry of ``classes`` (a class the fit never saw
    scores 0), so fits on label fractions and on all labels share one column order."""
    out = np.zeros((len(features), len(classes)), dtype=np.float64)
    out[:, np.searchsorted(np.asarray(classes), model.classes_)] = model.predict_proba(features)
    return out


def linear_head(model: Pipeline, **info) -> LinearHead:
    """The fitted probe as one affine map of the raw embedding (what ``sslray explain`` differentiates).

    The standardisation folds into the weights: ``w' = w / scale``, ``b' = b - w' . mean``. A binary
    fit has one coefficient row ``z`` (the logit of ``classes_[1]``); it becomes the rows
    ``[-z/2, z/2]``, whose softmax is the fit's sigmoid, so every class has its own logit.
    ``info``: the ``LinearHead`` flags and lineage (``l2_normalized``, ``per_channel``, ``lineage``).
    """
    scaler, clf = model.steps[0][1], model.steps[-1][1]
    weight = clf.coef_ / scaler.scale_
    bias = clf.intercept_ - weight @ scaler.mean_
    if len(clf.classes_) == 2 and len(weight) == 1:
        weight, bias = np.concatenate([-weight / 2, weight / 2]), np.concatenate([-bias / 2, bias / 2])
    return LinearHead(weight, bias, [str(c) for c in clf.classes_], **info)
