"""Training one MIL head on bags, and one nested-CV grid point, in plain torch (no Ray).

The recipe is HistoSSLscaling's (docs/protocols.md, "MIL over bags of tiles"): padded bags with
masks, at most ``max_tiles`` tiles per bag drawn afresh every epoch, Adam, batch 16, up to 50
epochs; cross-entropy (one logit and BCE for two classes) or the Cox partial likelihood for
survival. ``run_grid_point`` is what one Ray Tune trial runs: train on every inner fold, pick the
epoch count by the mean inner validation curve, refit on the outer training part for that many
epochs, and predict the outer test bags. The caller compares grid points by their best inner
score, which is the argmax over (configuration, epoch) the protocol asks for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from sslray.evaluate.bags import Bags
from sslray.evaluate.folds import Fold
from sslray.evaluate.metrics import auc, class_probabilities

EVAL_SEED = 2**31 - 1  # the tiles a bag shows at evaluation are the same every epoch


@dataclass(frozen=True)
class TrainSettings:
    head: str
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 50
    batch_size: int = 16
    max_tiles: int = 1000
    seed: int = 0
    survival: bool = False
    n_classes: int = 2
    ties: str = "efron"
    head_options: dict = field(default_factory=dict)
    device: str = "auto"  # auto: the GPU a trial was given (gpus_per_trial), else the CPU
    standardize: bool = True  # z-score features with the training tiles' mean and sd

    @property
    def n_outputs(self) -> int:
        return 1 if self.survival or self.n_classes == 2 else self.n_classes


@dataclass
class GridPoint:
    """What one trial reports: the inner curve, the epoch count it picks and the test outputs."""

    val_curve: list[float]  # mean inner validation score after each epoch
    best_epoch: int  # epochs to train (1-based)
    best_val: float
    test_outputs: list[list[float]]  # head outputs of the outer test bags after ``best_epoch`` epochs

    def to_dict(self) -> dict:
        return asdict(self)


class Standardised(nn.Module):
    """A head that sees features z-scored with statistics of its training tiles only.

    Embeddings are often L2-normalised (sslray embed's default): every coordinate is then about
    1/sqrt(dim), and a few hundred Adam steps on a small cohort barely move a head's first layer.
    """

    def __init__(self, head: nn.Module, mean: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.head = head
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def _z(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.scale) * mask.unsqueeze(-1)  # padding stays zero

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self._z(x, mask), mask)

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head.attention(self._z(x, mask), mask)


def tile_statistics(bags: Bags, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, sd) per feature over every tile of the bags at ``indices``; a constant feature gets sd 1.

    Summed bag by bag, so a trial never copies the shared tile array (one bag at a time in float64)."""
    total, squares, n = np.zeros(bags.dim), np.zeros(bags.dim), 0
    for i in indices:
        tiles = bags.tiles(int(i)).astype(np.float64)
        total += tiles.sum(axis=0)
        squares += np.square(tiles).sum(axis=0)
        n += len(tiles)
    mean = total / n
    sd = np.sqrt(np.maximum(squares / n - np.square(mean), 0.0))
    return mean, np.where(sd > 1e-8, sd, 1.0)


def pad_batch(bags: Bags, indices: np.ndarray, max_tiles: int, rng: np.random.Generator) -> tuple[torch.Tensor,
                                                                                                   torch.Tensor]:
    """(x (B, N, D), mask (B, N)) of the bags at ``indices``, each cut to ``max_tiles`` random tiles."""
    chosen = []
    for i in indices:
        tiles = bags.tiles(int(i))
        if len(tiles) > max_tiles:
            tiles = tiles[np.sort(rng.choice(len(tiles), max_tiles, replace=False))]
        chosen.append(tiles)
    longest = max(len(t) for t in chosen)
    x = np.zeros((len(chosen), longest, bags.dim), dtype=np.float32)
    mask = np.zeros((len(chosen), longest), dtype=bool)
    for row, tiles in enumerate(chosen):
        x[row, :len(tiles)] = tiles
        mask[row, :len(tiles)] = True
    return torch.from_numpy(x), torch.from_numpy(mask)


def resolve_device(settings: TrainSettings) -> torch.device:
    if settings.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(settings.device)


def loss_fn(settings: TrainSettings):
    """The training loss of a head's outputs against targets (class indices or (time, event) rows)."""
    if settings.survival:
        from sslray.evaluate.cox import cox_loss

        return lambda out, y: cox_loss(out[:, 0], y[:, 0], y[:, 1], ties=settings.ties)
    if settings.n_outputs == 1:
        bce = nn.BCEWithLogitsLoss()
        return lambda out, y: bce(out[:, 0], y.to(out.dtype))
    return nn.CrossEntropyLoss()


def score(settings: TrainSettings, targets: np.ndarray, outputs: np.ndarray) -> float:
    """The selection metric: AUC (macro one-vs-rest for several classes), or c-index for survival."""
    if settings.survival:
        from sslray.evaluate.survival import concordance

        try:
            return concordance(targets[:, 0], outputs[:, 0], targets[:, 1].astype(bool))
        except ValueError:  # a validation fold without comparable pairs scores nothing
            return float("nan")
    return auc(targets, class_probabilities(outputs))


def train(bags: Bags, targets: np.ndarray, train_idx: np.ndarray, settings: TrainSettings, epochs: int,
          watch: np.ndarray | None = None) -> tuple[nn.Module, list[np.ndarray]]:
    """(the head after ``epochs`` epochs, the outputs on ``watch`` bags after every epoch)."""
    from sslray.evaluate.mil_heads import build_head

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    device = resolve_device(settings)
    head = build_head(settings.head, bags.dim, settings.n_outputs, **settings.head_options)
    if settings.standardize:
        head = Standardised(head, *tile_statistics(bags, train_idx))
    head = head.to(device)
    optimiser = torch.optim.Adam(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    criterion = loss_fn(settings)
    y_all = torch.as_tensor(targets).to(device)
    history = []
    for _ in range(epochs):
        head.train()
        order = rng.permutation(train_idx)
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            x, mask = pad_batch(bags, batch, settings.max_tiles, rng)
            loss = criterion(head(x.to(device), mask.to(device)), y_all[torch.as_tensor(batch, device=device)])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if watch is not None:
            history.append(predict(head, bags, watch, settings))
    return head, history


@torch.no_grad()
def predict(head: nn.Module, bags: Bags, indices: np.ndarray, settings: TrainSettings) -> np.ndarray:
    """(len(indices), n_outputs) outputs; a bag longer than ``max_tiles`` shows the same tiles each call."""
    head.eval()
    device = next(head.parameters()).device
    rng = np.random.default_rng(EVAL_SEED)
    outputs = []
    for start in range(0, len(indices), settings.batch_size):
        x, mask = pad_batch(bags, indices[start:start + settings.batch_size], settings.max_tiles, rng)
        outputs.append(head(x.to(device), mask.to(device)).double().cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, settings.n_outputs))


def run_grid_point(bags: Bags, fold: Fold, settings: TrainSettings) -> GridPoint:
    """Inner folds -> the epoch count with the best mean validation score -> refit -> test outputs."""
    targets = bags.targets()
    curves = []
    for inner_train, inner_val in fold.inner:
        _, history = train(bags, targets, inner_train, settings, settings.epochs, watch=inner_val)
        curves.append([score(settings, targets[inner_val], out) for out in history])
    curve = _nanmean_rows(np.asarray(curves, dtype=np.float64))
    best = int(np.nanargmax(curve)) if np.isfinite(curve).any() else len(curve) - 1
    head, _ = train(bags, targets, fold.train, settings, best + 1)
    test = predict(head, bags, fold.test, settings)
    return GridPoint([float(v) for v in curve], best + 1, float(curve[best]), test.tolist())


def _nanmean_rows(curves: np.ndarray) -> np.ndarray:
    finite = np.isfinite(curves)
    total = np.where(finite, curves, 0.0).sum(axis=0)
    count = finite.sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
