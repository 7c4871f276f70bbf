"""Which tiles a MIL head looks at: its attention over a few test bags, as a heat map on the slide.

The head is refit exactly as the nested CV refit it for outer fold 0 (that fold's chosen lr,
weight decay and epoch count, the same seed and training bags), so the picture shows the model
that was scored, not a new one (docs/protocols.md, "MIL over bags of tiles"). The weights cover
every tile of a bag, not the ``max_tiles`` cut training draws, up to ``MAX_ATTENTION_TILES``.

This module also holds the two figure helpers ``pictures`` draws with (it imports this module,
so the helpers live here to keep the import graph acyclic). matplotlib is imported inside the
functions: ``load_protocols`` imports every module of the package. No Ray import.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sslray.evaluate.bags import Bags
from sslray.evaluate.folds import Fold
from sslray.evaluate.mil_results import HeadResult
from sslray.evaluate.mil_train import TrainSettings, train

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ATTENTION_HEADS = ("abmil", "dsmil", "transmil", "chowder")  # heads whose tile weights mean something
MAX_ATTENTION_TILES = 10_000  # a larger bag shows a seeded subsample
# Full attention is quadratic in the tiles: exact TransMIL over 10,000 tiles took ~7 GB and 30 s
# per bag on one CPU thread, so its picture shows at most this many tiles.
MAX_QUADRATIC_TILES = 2_000
MAX_GRID_SIDE = 1000  # heat map cells per side at most; finer coordinates are binned


@dataclass
class AttentionExample:
    """One bag's tile weights (one per tile shown) and where those tiles lie on the slide."""

    bag_id: str
    label: str | None
    coords: np.ndarray | None  # (n, 2) x, y of the tiles, or None when the table has no x/y
    weights: np.ndarray  # (n,)
    head: str = ""


def new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas: pyplot's global state (backend, current figure) is never touched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: str | Path, title: str) -> str:
    """Write ``figure`` as PNG with ``title`` in its metadata too (what a reader of the file can check)."""
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100, metadata={"Title": title})
    return str(path)


def attention_examples(bags: Bags, folds: list[Fold], head_result: HeadResult, head: str, base: TrainSettings,
                       n_bags: int = 4) -> list[AttentionExample]:
    """The attention of ``head``, refit as for outer fold 0, on up to ``n_bags`` of that fold's test bags.

    ``base.head_options`` are the head's own options; positive bags (any class but the first) come
    first for classification, bags with an event first for survival.
    """
    chosen = head_result.folds[0]
    fold = folds[chosen.fold]
    settings = replace(base, head=head, lr=chosen.params.get("lr", base.lr),
                       weight_decay=chosen.params.get("weight_decay", base.weight_decay))
    model, _ = train(bags, bags.targets(), fold.train, settings, max(1, chosen.best_epoch))
    return [bag_attention(model, bags, int(i), settings.seed, head) for i in pick_bags(bags, fold.test, n_bags)]


def pick_bags(bags: Bags, test: np.ndarray, n_bags: int) -> np.ndarray:
    """Up to ``n_bags`` of ``test``: the ones with a finding (positive class, observed event) first."""
    finding = bags.targets()[test] != 0 if bags.labels is not None else bags.event[test]
    return test[np.argsort(~finding, kind="stable")][:n_bags]


@torch.no_grad()
def bag_attention(model: torch.nn.Module, bags: Bags, i: int, seed: int, head: str = "") -> AttentionExample:
    """Bag ``i``'s weights over all its tiles (a seeded subsample past ``MAX_ATTENTION_TILES``)."""
    tiles = bags.tiles(i)
    rows = np.arange(len(tiles))
    cap = MAX_QUADRATIC_TILES if head == "transmil" else MAX_ATTENTION_TILES
    if len(rows) > cap:
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), cap, replace=False))
    model.eval()
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(tiles[rows], dtype=np.float32))[None].to(device)
    weights = model.attention(x, torch.ones(x.shape[:2], dtype=torch.bool, device=device))[0].double().cpu().numpy()
    coords = bags.coords[bags.offsets[i] + rows] if bags.coords is not None else None
    label = str(bags.labels[i]) if bags.labels is not None else None
    return AttentionExample(str(bags.ids[i]), label, coords, weights, head)


def attention_grid(coords: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """(rows = y, columns = x) grid of the weights, NaN where no tile lies, and imshow's extent.

    The cell is the smallest spacing between tile positions (tiles on a regular lattice, in
    pixels or in tile units); two tiles in one cell (binned coordinates) show the larger weight.
    The extent (left, right, bottom, top) puts the smallest y at the top, as in the image.
    """
    coords = np.asarray(coords, dtype=np.float64)
    origin = coords.min(axis=0)
    step = _tile_step(coords)
    cells = np.rint((coords - origin) / step).astype(np.int64)
    grid = np.full(cells.max(axis=0)[::-1] + 1, np.nan)
    np.fmax.at(grid, (cells[:, 1], cells[:, 0]), np.asarray(weights, dtype=np.float64))
    half = step / 2
    extent = (origin[0] - half, origin[0] + (grid.shape[1] - 1) * step + half,
              origin[1] + (grid.shape[0] - 1) * step + half, origin[1] - half)
    return grid, extent


def _tile_step(coords: np.ndarray) -> float:
    gaps = [np.diff(np.unique(axis)) for axis in coords.T]
    positive = np.concatenate([g[g > 0] for g in gaps])
    step = float(positive.min()) if len(positive) else 1.0
    span = float((coords.max(axis=0) - coords.min(axis=0)).max())
    return max(step, span / MAX_GRID_SIDE)


def plot_attention(example: AttentionExample, path: str | Path) -> str:
    """A heat map of the weights on the slide layout when the tiles have coordinates, else the
    weights sorted from the largest (how peaked the attention is)."""
    figure = new_figure(5.5, 4.5)
    axes = figure.subplots()
    title = f"{example.head + ' ' if example.head else ''}attention, {example.bag_id}" + \
        (f" ({example.label})" if example.label is not None else "")
    if example.coords is not None and len(example.weights):
        from matplotlib import colormaps
        from mpl_toolkits.axes_grid1 import make_axes_locatable

        grid, extent = attention_grid(example.coords, example.weights)
        image = axes.imshow(grid, cmap=colormaps["viridis"].with_extremes(bad="white"), extent=extent,
                            origin="upper", interpolation="nearest")
        bar = make_axes_locatable(axes).append_axes("right", size="4%", pad=0.08)  # as tall as the slide
        figure.colorbar(image, cax=bar, label="attention weight")
        axes.set(xlabel="x", ylabel="y (down, as in the slide)", aspect="equal")
    else:
        ordered = np.sort(example.weights)[::-1]
        axes.plot(np.arange(1, len(ordered) + 1), ordered, marker="." if len(ordered) <= 100 else None)
        axes.set(xlabel="tile rank", ylabel="attention weight")
    axes.set_title(title, fontsize="medium")
    return save_png(figure, path, title)
