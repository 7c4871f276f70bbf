"""The pictures an evaluation publishes beside results.json: ROC curves, a confusion matrix,
Kaplan-Meier risk groups, a 2-D map of the embeddings and MIL attention heat maps.

MIL and survival pictures use the pooled outer-test outputs, where every bag is scored once by
a model that never saw it (docs/protocols.md, "Nested cross-validation"); the tile-level helper
is for the linear probe and kNN protocols' test split. Each function writes one PNG on a
figure of its own (Agg canvas, pyplot's global state untouched) and returns its path; matplotlib
and umap-learn are imported inside the functions. No Ray import.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sslray.evaluate.attention_maps import AttentionExample, new_figure, plot_attention, save_png
from sslray.evaluate.bags import Bags
from sslray.evaluate.metrics import auc, class_probabilities
from sslray.evaluate.mil_results import HeadResult, pooled_outputs

log = logging.getLogger(__name__)

MAX_MAP_POINTS = 5000  # an embedding map shows a seeded subsample of at most this many points
MAX_LEGEND_CATEGORIES = 20  # more categories get a continuous colour map and no legend


def _one_vs_rest(targets: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, tuple]:
    """Curve name -> (is positive, score): one curve for two classes, one per class beyond."""
    targets, proba = np.asarray(targets), np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != len(classes):
        raise ValueError(f"probabilities of shape {proba.shape} for {len(classes)} classes")
    if len(classes) == 2:
        return {f"{classes[1]} vs {classes[0]}": (targets == 1, proba[:, 1])}
    return {f"{name} vs rest": (targets == k, proba[:, k]) for k, name in enumerate(classes)}


def _roc_panel(axes, curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str) -> None:
    """One ROC curve per entry, its AUC in the legend; a curve needs both classes among its targets."""
    from sklearn.metrics import roc_auc_score, roc_curve

    for name, (positive, score) in curves.items():
        if positive.all() or not positive.any():
            log.info("ROC %s: one class only, no curve", name)
            continue
        fpr, tpr, _ = roc_curve(positive, score)
        axes.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(positive, score):.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    axes.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
             aspect="equal")
    axes.set_title(title, fontsize="medium")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="lower right", fontsize="small")


def roc_curves(targets: np.ndarray, proba: np.ndarray, classes: list[str], path: str | Path,
               title: str = "ROC") -> str:
    """One model's ROC: a single curve for two classes, one-vs-rest curves for more.

    ``targets`` are class indices into ``classes``; ``proba`` (n, C) class probabilities.
    """
    figure = new_figure(5, 5)
    _roc_panel(figure.subplots(), _one_vs_rest(targets, proba, classes), title)
    return save_png(figure, path, title)


def roc_curves_by_model(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], classes: list[str],
                        path: str | Path, title: str = "ROC") -> str:
    """Several models' ROC overlaid: ``curves`` maps a model's name to its (targets, proba).

    Two classes: one panel, one curve per model. More: one panel per class (one-vs-rest), each
    with one curve per model.
    """
    per_model = {model: _one_vs_rest(t, p, classes) for model, (t, p) in curves.items()}
    panels = list(next(iter(per_model.values()))) if per_model else []
    columns = min(len(panels), 3) or 1
    rows = -(-len(panels) // columns) or 1
    figure = new_figure(5 * columns, 5 * rows)
    grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for axes, panel in zip(grid, panels):
        name = title if len(panels) == 1 else f"{title}: {panel}"
        _roc_panel(axes, {model: named[panel] for model, named in per_model.items()}, name)
    for axes in grid[len(panels):]:
        axes.set_axis_off()
    return save_png(figure, path, title)


def confusion_matrix_plot(targets: np.ndarray, predicted: np.ndarray, classes: list[str], path: str | Path,
                          title: str = "Confusion matrix") -> str:
    """Counts in the cells, colours by the share of each true class (rows sum to 1), so a rare class's
    errors show as plainly as a common one's."""
    from sklearn.metrics import confusion_matrix

    counts = confusion_matrix(targets, predicted, labels=np.arange(len(classes)))
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = 3 + 0.6 * len(classes)
    figure = new_figure(side + 1.2, side)
    axes = figure.subplots()
    image = axes.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(counts):
        axes.text(j, i, str(count), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
    ticks = np.arange(len(classes))
    axes.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true")
    axes.set_xticklabels(classes, rotation=45 if len(classes) > 3 else 0, ha="right" if len(classes) > 3 else "center")
    axes.set_yticklabels(classes)
    axes.set_title(title, fontsize="medium")
    figure.colorbar(image, ax=axes, label="share of the true class")
    return save_png(figure, path, title)


def project_2d(features: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """((n, 2) coordinates, method): UMAP when umap-learn is importable (and n > 3), else PCA."""
    x = np.asarray(features, dtype=np.float64)
    try:
        import umap
    except ImportError:
        umap = None
    if umap is not None and len(x) > 3:
        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), random_state=seed)
        return np.asarray(reducer.fit_transform(x), dtype=np.float64), "UMAP"
    out = np.zeros((len(x), 2))
    components = min(2, x.shape[1], len(x) - 1) if x.ndim == 2 and len(x) else 0
    if components > 0:
        from sklearn.decomposition import PCA

        out[:, :components] = PCA(n_components=components, random_state=seed).fit_transform(x)
    return out, "PCA"


def _scatter(axes, xy: np.ndarray, values: np.ndarray, name: str) -> None:
    """Points coloured by category: a legend up to ``MAX_LEGEND_CATEGORIES``, a colour map beyond."""
    from matplotlib import colormaps

    categories, codes = np.unique(np.asarray(values).astype(str), return_inverse=True)
    size = float(np.clip(3000 / max(len(xy), 1), 2, 30))
    if len(categories) > MAX_LEGEND_CATEGORIES:
        axes.scatter(xy[:, 0], xy[:, 1], c=codes, cmap="viridis", s=size, linewidths=0)
        return
    palette = colormaps["tab10" if len(categories) <= 10 else "tab20"]
    for k, category in enumerate(categories):
        chosen = codes == k
        axes.scatter(xy[chosen, 0], xy[chosen, 1], color=palette(k), s=size, linewidths=0, label=category)
    axes.legend(title=name, fontsize="small", markerscale=max(1.0, 20 / size) ** 0.5)


def embedding_map(features: np.ndarray, colour_by: Mapping[str, np.ndarray], path: str | Path,
                  title: str = "Embeddings", seed: int = 0) -> str:
    """A 2-D map of ``features`` (UMAP or PCA, named in the title and axes), one panel per colouring.

    ``colour_by`` maps a panel's name (e.g. "label", "patient") to one value per row of
    ``features``. Past ``MAX_MAP_POINTS`` rows a seeded subsample is drawn.
    """
    features = np.asarray(features)
    n = len(features)
    keep = np.sort(np.random.default_rng(seed).choice(n, MAX_MAP_POINTS, replace=False)) if n > MAX_MAP_POINTS \
        else np.arange(n)
    xy, method = project_2d(features[keep], seed)
    figure = new_figure(5 * max(len(colour_by), 1), 4.8)
    panels = np.atleast_1d(figure.subplots(1, max(len(colour_by), 1), squeeze=False)).ravel()
    for axes, (name, values) in zip(panels, colour_by.items()):
        _scatter(axes, xy, np.asarray(values)[keep], name)
        axes.set(xlabel=f"{method} 1", ylabel=f"{method} 2")
        axes.set_title(f"by {name}", fontsize="medium")
    shown = f"{len(keep)} of {n} points" if len(keep) < n else f"{n} points"
    full_title = f"{title} ({method}, {shown})"
    figure.suptitle(full_title)
    return save_png(figure, path, full_title)


def file_safe(name: str) -> str:
    """``name`` usable in a file name: anything but letters, digits, '.', '-' and '_' becomes '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "bag"


def best_head(bags: Bags, heads: Mapping[str, HeadResult]) -> str:
    """The head with the best mean outer-fold AUC (NaN folds left out; ties: the first listed)."""
    targets = bags.targets()

    def mean_auc(result: HeadResult) -> float:
        scores = [auc(targets[f.test], class_probabilities(f.outputs)) for f in result.folds]
        finite = [s for s in scores if np.isfinite(s)]
        return float(np.mean(finite)) if finite else -np.inf

    return max(heads, key=lambda name: mean_auc(heads[name]))


def _classification_pictures(bags: Bags, heads: Mapping[str, HeadResult], folder: str) -> list[str]:
    targets = bags.targets()
    pooled = {}
    for name, result in heads.items():
        index, outputs = pooled_outputs(result, len(bags))
        pooled[name] = (targets[index], class_probabilities(outputs))
    paths = [roc_curves_by_model(pooled, bags.classes, os.path.join(folder, "roc.png"),
                                 title="ROC, pooled outer test folds")]
    best = best_head(bags, heads)
    t, proba = pooled[best]
    paths.append(confusion_matrix_plot(t, proba.argmax(axis=1), bags.classes,
                                       os.path.join(folder, f"confusion_{file_safe(best)}.png"),
                                       title=f"{best}, pooled outer test folds"))
    return paths


def _survival_pictures(bags: Bags, heads: Mapping[str, HeadResult], folder: str) -> list[str]:
    from sslray.evaluate.survival import plot_risk_groups, risk_groups

    paths = []
    for name, result in heads.items():
        index, outputs = pooled_outputs(result, len(bags))
        try:
            groups = risk_groups(bags.time[index], bags.event[index], outputs[:, 0])
        except ValueError as err:
            log.info("no Kaplan-Meier picture for %s: %s", name, err)
            continue
        path = os.path.join(folder, f"km_{file_safe(name)}.png")
        plot_risk_groups(groups, path)
        paths.append(path)
    return paths


def _bags_map(bags: Bags, folder: str) -> str:
    from sslray.evaluate.linear_cox_cv import mean_pooled

    colours = {"label": bags.labels} if bags.labels is not None else \
        {"event": np.where(bags.event, "event", "censored")}
    if bags.patients is not None:
        colours["patient"] = bags.patients
    return embedding_map(mean_pooled(bags), colours, os.path.join(folder, "bags_map.png"),
                         title=f"Mean-pooled {bags.bag_column} bags")


def attention_file(head: str, rank: int, example: AttentionExample) -> str:
    return f"attention_{file_safe(head)}_{rank}_{file_safe(example.bag_id)}.png"


def draw_bag_pictures(bags: Bags, heads: Mapping[str, HeadResult], folder: str,
                      attention: Mapping[str, list[AttentionExample]] | None = None) -> list[str]:
    """Every MIL/survival picture into ``folder``; returns the paths written.

    Classification: ``roc.png`` (one curve per head) and ``confusion_<best head>.png``. Survival:
    ``km_<head>.png`` per head whose risks split at the median. Both: ``bags_map.png``, and
    ``attention_<head>_<rank>_<bag>.png`` for each example in ``attention`` (head -> examples).
    """
    paths = _classification_pictures(bags, heads, folder) if bags.labels is not None else \
        _survival_pictures(bags, heads, folder)
    paths.append(_bags_map(bags, folder))
    for head, examples in (attention or {}).items():
        for rank, example in enumerate(examples):
            paths.append(plot_attention(example, os.path.join(folder, attention_file(head, rank, example))))
    return paths


def draw_tile_pictures(features: np.ndarray, labels: np.ndarray, groups: np.ndarray | None,
                       test_targets: np.ndarray, test_proba: np.ndarray, classes: list[str], folder: str,
                       prefix: str = "") -> list[str]:
    """A tile-level protocol's pictures: ``<prefix>roc.png`` and ``<prefix>confusion.png`` of the test
    predictions (targets are class indices, ``test_proba`` (n, C)), and ``<prefix>embedding_map.png``
    of ``features`` coloured by ``labels`` and, when given, by ``groups`` (e.g. slide or plate)."""
    paths = [roc_curves(test_targets, test_proba, classes, os.path.join(folder, f"{prefix}roc.png"),
                        title="ROC, test split"),
             confusion_matrix_plot(test_targets, np.asarray(test_proba).argmax(axis=1), classes,
                                   os.path.join(folder, f"{prefix}confusion.png"), title="Confusion matrix, test split")]
    colours = {"label": labels} if groups is None else {"label": labels, "group": groups}
    paths.append(embedding_map(features, colours, os.path.join(folder, f"{prefix}embedding_map.png"),
                               title="Tile embeddings"))
    return paths
