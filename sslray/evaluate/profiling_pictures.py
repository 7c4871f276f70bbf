"""The pictures ``sslray evaluate --protocol profiling`` publishes beside results.json.

- ``profiles_map.png``: UMAP (umap-learn when importable, else PCA) of the well profiles after the
  first pipeline, one panel per colouring: MoA, plate, batch (those the table has).
- ``map_vs_pvalue.png``: each perturbation's replicate-retrieval mAP against −log10 of its p-value,
  the phenotypically active ones (corrected p below the threshold) highlighted.
- ``channel_attribution.png``: the random-forest importance per channel block, all treated wells vs
  the controls and, beside it, per perturbation (when the features are named by channel).

Each function draws one PNG on a figure of its own (``attention_maps.new_figure``) and returns its
path. No Ray import.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from sslray.evaluate.attention_maps import new_figure, save_png
from sslray.evaluate.pictures import embedding_map


def profiles_map(
    df: pd.DataFrame, features: list[str], colour_columns: dict[str, str | None], folder: str, seed: int = 0
) -> str:
    """The well profiles' 2-D map, a panel per ``{panel name: column}`` the table has (missing values: "none")."""
    colours = {
        name: df[column].fillna("none").astype(str).to_numpy()
        for name, column in colour_columns.items()
        if column and column in df.columns
    }
    return embedding_map(
        df[features].to_numpy(dtype=np.float64),
        colours or {"profile": np.zeros(len(df))},
        os.path.join(folder, "profiles_map.png"),
        title="Well profiles",
        seed=seed,
    )


def map_vs_pvalue(replicate_maps: list[dict], threshold: float, folder: str) -> str:
    """mAP (x) against −log10 p (y) per perturbation, active ones (corrected p < ``threshold``) in colour."""
    table = pd.DataFrame(replicate_maps)
    figure = new_figure(5.5, 4.5)
    axes = figure.subplots()
    y = -np.log10(table["p_value"].to_numpy(dtype=np.float64))
    active = table["below_corrected_p"].to_numpy(dtype=bool)
    axes.scatter(table["mean_average_precision"][~active], y[~active], s=14, color="0.6", label="not active")
    axes.scatter(
        table["mean_average_precision"][active],
        y[active],
        s=14,
        color="tab:red",
        label=f"active (corrected p < {threshold:g})",
    )
    axes.set(xlabel="mAP (replicates vs controls)", ylabel="−log10 p", xlim=(-0.02, 1.02))
    axes.legend(fontsize="small")
    title = f"Phenotypic activity: {int(active.sum())} of {len(table)} perturbations"
    axes.set_title(title, fontsize="medium")
    return save_png(figure, os.path.join(folder, "map_vs_pvalue.png"), title)


def channel_bars(overall: pd.Series, per_perturbation: pd.DataFrame, folder: str) -> str:
    """Bars of the importance per channel (all treated wells vs controls); a heat map per perturbation beside."""
    panels = 2 if len(per_perturbation) else 1
    figure = new_figure(5 + 4 * (panels - 1), max(3.5, 0.25 * len(per_perturbation) + 1.5))
    axes = np.atleast_1d(figure.subplots(1, panels))
    axes[0].bar(overall.index.astype(str), overall.to_numpy(), color="tab:blue")
    axes[0].set(ylabel="random-forest importance (sums to 1)", title="treated vs controls")
    if panels == 2:
        image = axes[1].imshow(per_perturbation.to_numpy(dtype=np.float64), aspect="auto", cmap="viridis", vmin=0)
        axes[1].set_xticks(range(per_perturbation.shape[1]), per_perturbation.columns.astype(str))
        axes[1].set_yticks(range(len(per_perturbation)), per_perturbation.index.astype(str), fontsize="small")
        axes[1].set_title("each perturbation vs controls", fontsize="medium")
        figure.colorbar(image, ax=axes[1], label="importance")
    title = "Channel attribution"
    figure.suptitle(title)
    return save_png(figure, os.path.join(folder, "channel_attribution.png"), title)
