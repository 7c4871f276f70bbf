"""Second-level SSL: DINO on spots of tile embeddings -> one embedding per spot.

Atarsaikhan et al. 2025 (bioRxiv 10.1101/2025.03.05.640729) aggregate the first-level patch
embeddings of each TMA spot with a second self-supervised model. Here that model is the
``SpotEncoder`` (a small ViT, one token per tile, no position embedding) trained with DINO
(Caron et al. 2021, arXiv:2104.14294): the views of a spot are random rectangular windows of
its tile grid (two global, ``n_local`` local) with random token dropout, the student sees all
of them, an EMA teacher the global ones. The loss, centring, EMA and schedules are those of
``sslray.methods.dino``, imported, not re-implemented.

The data is one vector per tile, so training runs in one process (CPU or one GPU) with a
plain torch loop; no Ray. The output is a spot table published like every sslray output
(``_SUCCESS`` last), with the teacher's weights under ``_aggregator/`` in the same directory
(an underscore directory, which parquet readers skip).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import torch
import torch.nn.functional as F
from torch import nn

from sslray import storage, tracking
from sslray.aggregate.grids import SpotGrid, build_grids, pad_rows, random_window
from sslray.aggregate.model import SpotEncoder, SpotModelConfig
from sslray.artifacts import require_artifact
from sslray.artifacts.spot_table import AGGREGATOR_DIR, SpotTable
from sslray.artifacts.vector_table import embedding_matrix
from sslray.config import to_dict
from sslray.methods.dino import (
    DINOConfig,
    DINOHead,
    cosine_momentum,
    dino_loss,
    ema_update,
    teacher_temperature,
    update_center,
)
from sslray.methods.monitor import collapse_metrics
from sslray.train.loop import cosine_schedule, param_groups

log = logging.getLogger(__name__)

WEIGHTS_FILE = "aggregator.safetensors"
META_FILE = "aggregator.json"
FORMAT_VERSION = 1
REQUIRED_COLUMNS = ("embedding", "x", "y")


@dataclass
class SpotViewConfig:
    """DINO views of a spot: windows of its grid, sides in cells, plus token dropout."""

    global_window: int = 14
    local_window: int = 7
    n_local: int = 6
    min_side_fraction: float = 0.5  # a window side is drawn from [ceil(fraction * cap), cap]
    token_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.global_window < 1 or self.local_window < 1:
            raise ValueError(f"views.global_window and views.local_window must be >= 1, got "
                             f"{self.global_window}, {self.local_window}")
        if self.n_local < 0:
            raise ValueError(f"views.n_local must be >= 0, got {self.n_local}")
        if not 0 < self.min_side_fraction <= 1:
            raise ValueError(f"views.min_side_fraction must be in (0, 1], got {self.min_side_fraction}")
        if not 0 <= self.token_dropout < 1:
            raise ValueError(f"views.token_dropout must be in [0, 1), got {self.token_dropout}")


@dataclass
class SpotDINOConfig:
    """Head and loss; defaults follow Lightly's DINO (the seed's code base) for small data."""

    out_dim: int = 2048
    hidden_dim: int = 512
    bottleneck_dim: int = 64
    head_layers: int = 3
    norm_last_layer: bool = True
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: float = 0
    center_momentum: float = 0.9
    teacher_momentum: float = 0.996  # start of the cosine schedule to 1
    freeze_last_layer_epochs: float = 1

    def __post_init__(self) -> None:
        if self.out_dim < 2 or self.hidden_dim < 1 or self.bottleneck_dim < 1 or self.head_layers < 1:
            raise ValueError("dino.out_dim must be >= 2 and dino.hidden_dim, dino.bottleneck_dim, dino.head_layers >= 1")
        if min(self.student_temp, self.teacher_temp, self.warmup_teacher_temp) <= 0:
            raise ValueError("dino.student_temp, dino.teacher_temp and dino.warmup_teacher_temp must be > 0")
        if not 0 <= self.center_momentum < 1 or not 0 <= self.teacher_momentum <= 1:
            raise ValueError("dino.center_momentum must be in [0, 1) and dino.teacher_momentum in [0, 1]")
        if self.warmup_teacher_temp_epochs < 0 or self.freeze_last_layer_epochs < 0:
            raise ValueError("dino.warmup_teacher_temp_epochs and dino.freeze_last_layer_epochs must be >= 0")

    def head_config(self) -> DINOConfig:
        return DINOConfig(out_dim=self.out_dim, hidden_dim=self.hidden_dim, bottleneck_dim=self.bottleneck_dim,
                          head_layers=self.head_layers, norm_last_layer=self.norm_last_layer)


@dataclass
class SpotOptimConfig:
    """AdamW with DINO's schedules (warm-up then cosine lr, cosine weight decay); no batch scaling."""

    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_epochs: float = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0  # 0 disables clipping

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.min_lr < 0 or self.warmup_epochs < 0:
            raise ValueError("optim.lr must be > 0, optim.min_lr and optim.warmup_epochs >= 0")
        if self.weight_decay < 0 or self.weight_decay_end < 0 or self.clip_grad < 0:
            raise ValueError("optim.weight_decay, optim.weight_decay_end and optim.clip_grad must be >= 0")


@dataclass
class AggregateConfig:
    """``sslray aggregate``: an embeddings table -> a spot table (one DINO-trained vector per spot)."""

    embeddings: str = ""  # input: an sslray embeddings table (directory of parquet + _SUCCESS)
    out: str = ""  # output: the spot table URL
    spot_column: str = "image_id"  # tiles sharing a value form one spot
    tile_size: float | None = None  # grid step in pixels; default: inferred from the tile positions
    carry_columns: list[str] = field(default_factory=lambda: ["label", "group", "split", "slide_id", "patient_id"])
    model: SpotModelConfig = field(default_factory=SpotModelConfig)
    dino: SpotDINOConfig = field(default_factory=SpotDINOConfig)
    views: SpotViewConfig = field(default_factory=SpotViewConfig)
    optim: SpotOptimConfig = field(default_factory=SpotOptimConfig)
    epochs: float = 100
    steps: int | None = None  # overrides epochs when set
    batch_size: int = 64  # spots per step
    embed_batch_size: int = 64  # spots per forward pass when embedding the full grids
    log_every: int = 10  # collapse metrics every N steps (the loss is logged every step)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    overwrite: bool = False
    name: str = "aggregate"  # the MLflow run name
    run_dir: str = "sslray-runs"  # where the default (SQLite) MLflow store lives
    tracking: tracking.TrackingConfig = field(default_factory=tracking.TrackingConfig)

    def __post_init__(self) -> None:
        for key in ("embeddings", "out", "spot_column"):
            if not getattr(self, key):
                raise ValueError(f"{key} is required")
        if self.tile_size is not None and self.tile_size <= 0:
            raise ValueError(f"tile_size must be > 0 (pixels), got {self.tile_size}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        for key in ("batch_size", "embed_batch_size", "log_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


class SpotDINO(nn.Module):
    """Student and EMA teacher spot encoders with DINO heads and the teacher centre."""

    def __init__(self, in_dim: int, model_cfg: SpotModelConfig, dino_cfg: SpotDINOConfig) -> None:
        super().__init__()
        self.cfg = dino_cfg
        self.student = SpotEncoder(in_dim, model_cfg)
        self.head = DINOHead(model_cfg.dim, dino_cfg.head_config())
        self.teacher = copy.deepcopy(self.student)
        self.teacher_head = copy.deepcopy(self.head)
        for p in [*self.teacher.parameters(), *self.teacher_head.parameters()]:
            p.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, dino_cfg.out_dim))
        self.train()

    def train(self, mode: bool = True) -> SpotDINO:
        """The teacher always runs without stochastic depth, as in DINO's reference code."""
        super().train(mode)
        self.teacher.eval()
        self.teacher_head.eval()
        return self

    def forward(self, embeddings: torch.Tensor, views: SpotViews, teacher_temp: float) -> tuple[torch.Tensor, torch.Tensor]:
        """DINO loss over the views of a batch of spots; also the teacher CLS of global view 1."""
        n_views = 2 + views.n_local
        g_tokens, l_tokens = embeddings[views.global_rows], embeddings[views.local_rows]
        with torch.no_grad():
            teacher_cls = self.teacher(g_tokens, views.global_mask)
            teacher_out = list(self.teacher_head(teacher_cls).chunk(2))
        student_cls = [self.student(g_tokens, views.global_mask)]
        if views.n_local:
            student_cls.append(self.student(l_tokens, views.local_mask))
        student_out = list(self.head(torch.cat(student_cls)).chunk(n_views))  # one head call, as in DINO
        loss = dino_loss(student_out, teacher_out, self.center, self.cfg.student_temp, teacher_temp)
        self.center.copy_(update_center(self.center, teacher_out, self.cfg.center_momentum))
        return loss, teacher_cls[: views.batch]


@dataclass
class SpotViews:
    """Row indices into the tile embedding matrix: globals (2B, Ng), locals (n_local * B, Nl)."""

    global_rows: torch.Tensor
    global_mask: torch.Tensor
    local_rows: torch.Tensor
    local_mask: torch.Tensor
    batch: int
    n_local: int


def make_views(grids: list[SpotGrid], cfg: SpotViewConfig, rng: np.random.Generator,
               device: torch.device | str = "cpu") -> SpotViews:
    """Two global and ``n_local`` local windows of every spot, each view a batch over spots."""
    def windows(side: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [random_window(g, side, cfg.min_side_fraction, rng, cfg.token_dropout) for _ in range(count) for g in grids]
        idx, mask = pad_rows(rows)
        return torch.from_numpy(idx).to(device), torch.from_numpy(mask).to(device)

    g_rows, g_mask = windows(cfg.global_window, 2)
    l_rows, l_mask = windows(cfg.local_window, cfg.n_local)
    return SpotViews(g_rows, g_mask, l_rows, l_mask, len(grids), cfg.n_local)


def _batches(n: int, size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless batches of ``size`` spot indices, each epoch a fresh permutation (wrapping over epochs)."""
    pending = np.empty(0, dtype=np.int64)
    while True:
        while len(pending) < size:
            pending = np.concatenate([pending, rng.permutation(n)])
        yield pending[:size]
        pending = pending[size:]


def schedule_steps(n_spots: int, cfg: AggregateConfig) -> tuple[int, int, int]:
    """(batch size, steps per epoch, total steps); a batch never exceeds the number of spots."""
    batch = min(cfg.batch_size, n_spots)
    per_epoch = math.ceil(n_spots / batch)
    total = cfg.steps if cfg.steps is not None else max(1, round(cfg.epochs * per_epoch))
    return batch, per_epoch, total


def train_aggregator(
    embeddings: torch.Tensor,
    grids: list[SpotGrid],
    cfg: AggregateConfig,
    device: torch.device | str = "cpu",
    log_fn: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[SpotDINO, list[float]]:
    """DINO on ``grids`` whose cells index rows of ``embeddings`` (n_tiles, D); returns the model and losses."""
    if len(grids) < 2:
        raise ValueError(f"DINO needs at least 2 spots to train on, got {len(grids)}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = torch.device(device)
    embeddings = embeddings.to(device=device, dtype=torch.float32)
    model = SpotDINO(embeddings.shape[1], cfg.model, cfg.dino).to(device)
    optimizer = torch.optim.AdamW(param_groups([model.student, model.head]), lr=cfg.optim.lr)
    batch, per_epoch, total = schedule_steps(len(grids), cfg)
    warmup = round(cfg.optim.warmup_epochs * per_epoch)
    warmup_temp = round(cfg.dino.warmup_teacher_temp_epochs * per_epoch)
    freeze_last = round(cfg.dino.freeze_last_layer_epochs * per_epoch)
    trainable = [p for p in [*model.student.parameters(), *model.head.parameters()] if p.requires_grad]
    losses: list[float] = []
    for step, idx in zip(range(total), _batches(len(grids), batch, rng)):
        lr = cosine_schedule(step, total, cfg.optim.lr, cfg.optim.min_lr, warmup)
        wd = cosine_schedule(step, total, cfg.optim.weight_decay, cfg.optim.weight_decay_end)
        for group in optimizer.param_groups:
            group["lr"] = lr
            if group["apply_wd"]:
                group["weight_decay"] = wd
        views = make_views([grids[i] for i in idx], cfg.views, rng, device)
        temp = teacher_temperature(step, warmup_temp, cfg.dino.warmup_teacher_temp, cfg.dino.teacher_temp)
        loss, teacher_cls = model(embeddings, views, temp)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"aggregator loss is {loss.item()} at step {step}; lower optim.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.clip_grad)
        if step < freeze_last:  # DINO: the prototypes stay fixed while the rest settles
            for p in model.head.last_layer.parameters():
                p.grad = None
        optimizer.step()
        momentum = cosine_momentum(step, total, cfg.dino.teacher_momentum)
        ema_update(model.teacher, model.student, momentum)
        ema_update(model.teacher_head, model.head, momentum)
        losses.append(float(loss.detach()))
        metrics = {"loss": losses[-1], "lr": lr, "weight_decay": wd, "teacher_temp": temp, "teacher_momentum": momentum}
        if step % cfg.log_every == 0 or step == total - 1:
            metrics.update(collapse_metrics(teacher_cls))
            log.info("aggregate step %d/%d loss %.4f", step + 1, total, losses[-1])
        if log_fn is not None:
            log_fn(step, metrics)
    model.eval()
    return model, losses


@torch.no_grad()
def embed_spots(encoder: SpotEncoder, embeddings: torch.Tensor, grids: list[SpotGrid], batch_size: int = 64,
                device: torch.device | str = "cpu") -> np.ndarray:
    """L2-normalised CLS embedding of every spot's full grid: (n_spots, dim) float32, in ``grids`` order.

    Spots are batched by size so little compute goes to padding.
    """
    encoder.eval()
    embeddings = embeddings.to(device=device, dtype=torch.float32)
    out = np.empty((len(grids), encoder.embed_dim), dtype=np.float32)
    order = np.argsort([g.n_tiles for g in grids], kind="stable")
    for start in range(0, len(order), batch_size):
        chunk = order[start: start + batch_size]
        rows, mask = pad_rows([grids[i].rows for i in chunk])
        rows_t, mask_t = torch.from_numpy(rows).to(embeddings.device), torch.from_numpy(mask).to(embeddings.device)
        out[chunk] = F.normalize(encoder(embeddings[rows_t], mask_t).float(), dim=-1).cpu().numpy()
    return out


def read_embeddings(url: str, spot_column: str, carry_columns: list[str]) -> pa.Table:
    """The columns the aggregation needs from a complete embeddings table, checked."""
    require_artifact(url, ("embeddings",))  # names a tile store, spot table or typo as such
    fs, path = storage.filesystem(url)
    dataset = pads.dataset(path, filesystem=fs, format="parquet")
    available = dataset.schema.names
    if spot_column not in available:
        raise KeyError(f"spot_column {spot_column!r} is not a column of {url}; available columns: {', '.join(available)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in available]
    if missing:
        raise KeyError(f"{url} lacks column(s) {missing} needed to build spot grids; available columns: "
                       f"{', '.join(available)}")
    carry = [c for c in carry_columns if c in available and c != spot_column]
    table = dataset.to_table(columns=[spot_column, *REQUIRED_COLUMNS, *carry])
    if table.num_rows == 0:
        raise ValueError(f"embeddings table {url} has no rows")
    return table


def _plain(column: pa.ChunkedArray) -> pa.Array:
    arr = column.combine_chunks()
    return arr.cast(arr.type.value_type) if pa.types.is_dictionary(arr.type) else arr


def spot_table(table: pa.Table, grids: list[SpotGrid], spot_column: str, features: np.ndarray,
               carry: list[str]) -> tuple[pa.Table, list[str]]:
    """One row per spot: id, the carried columns that are constant within every spot, size, embedding."""
    first = np.array([g.rows[0] for g in grids], dtype=np.int64)
    spot_of_row = np.empty(table.num_rows, dtype=np.int64)
    for i, g in enumerate(grids):
        spot_of_row[g.rows] = i
    columns = {spot_column: _plain(table.column(spot_column)).take(pa.array(first))}
    carried = []
    for name in carry:
        values = _plain(table.column(name))
        reference = values.take(pa.array(first[spot_of_row]))
        same = pc.or_(pc.fill_null(pc.equal(values, reference), False),
                      pc.and_(pc.is_null(values), pc.is_null(reference)))
        if not pc.all(same).as_py():
            log.warning("column %r varies within some spots; it is not carried to the spot table", name)
            continue
        columns[name] = values.take(pa.array(first))
        carried.append(name)
    columns["n_tiles"] = pa.array([g.n_tiles for g in grids], pa.int32())
    columns["grid_rows"] = pa.array([g.cells.shape[0] for g in grids], pa.int32())
    columns["grid_cols"] = pa.array([g.cells.shape[1] for g in grids], pa.int32())
    flat = pa.array(features.astype(np.float32, copy=False).reshape(-1))
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, features.shape[1])
    return pa.table(columns), carried


def save_aggregator(directory: str, encoder: SpotEncoder, meta: dict) -> None:
    """The teacher encoder as safetensors plus the JSON that rebuilds it."""
    from safetensors.torch import save as save_safetensors

    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    storage.write_bytes(storage.join(directory, WEIGHTS_FILE), save_safetensors(state))
    storage.write_json(storage.join(directory, META_FILE), {"format_version": FORMAT_VERSION, **meta})


def load_aggregator(url: str) -> tuple[SpotEncoder, dict]:
    """A spot table URL (or its ``_aggregator`` directory) -> the trained encoder (eval mode) and its meta."""
    from safetensors.torch import load as load_safetensors

    directory = url if storage.exists(storage.join(url, META_FILE)) else storage.join(url, AGGREGATOR_DIR)
    meta = storage.read_json(storage.join(directory, META_FILE))
    encoder = SpotEncoder(meta["in_dim"], SpotModelConfig(**meta["model"]))
    encoder.load_state_dict(load_safetensors(storage.read_bytes(storage.join(directory, WEIGHTS_FILE))))
    return encoder.eval(), meta


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} requested but no CUDA device is available")
    return torch.device(name)


def run_aggregate(cfg: AggregateConfig) -> str:
    """Train the spot aggregator on ``cfg.embeddings`` and publish the spot table; returns its URL."""
    storage.check_destination(cfg.out, "spot_table", "spot table", cfg.overwrite)  # before any work
    device = resolve_device(cfg.device)
    table = read_embeddings(cfg.embeddings, cfg.spot_column, cfg.carry_columns)
    if table.column(cfg.spot_column).null_count:
        raise ValueError(f"spot_column {cfg.spot_column!r} has {table.column(cfg.spot_column).null_count} null values")
    spot_ids = _plain(table.column(cfg.spot_column)).to_numpy(zero_copy_only=False)
    x = table.column("x").to_numpy()
    y = table.column("y").to_numpy()
    grids, grid_step = build_grids(spot_ids, x, y, cfg.tile_size)
    if len(grids) < 2:
        raise ValueError(f"{cfg.embeddings} has {len(grids)} spot(s) by {cfg.spot_column!r}; DINO needs at least 2")
    embeddings = torch.from_numpy(embedding_matrix(table.column("embedding")))
    uri = tracking.resolve_uri(cfg.tracking, cfg.run_dir)
    tags = {"sslray.stage": "aggregate", "sslray.embeddings": tracking.redact(cfg.embeddings),
            "sslray.spots": tracking.redact(cfg.out), "sslray.spot_column": cfg.spot_column}
    run_id = tracking.start_run(uri, cfg.tracking.experiment, cfg.name, cfg.run_dir, tags)
    try:
        tracking.log_config(uri, run_id, to_dict(cfg))
        tracking.log_metrics(uri, run_id, {"n_spots": len(grids), "n_tiles": table.num_rows, "input_dim":
                                           embeddings.shape[1], "grid_step_x": grid_step[0], "grid_step_y": grid_step[1]})
        started = time.perf_counter()
        model, losses = train_aggregator(embeddings, grids, cfg, device,
                                         lambda step, m: tracking.log_metrics(uri, run_id, m, step))
        features = embed_spots(model.teacher, embeddings, grids, cfg.embed_batch_size, device)
        final = {f"spots_{k}": v for k, v in collapse_metrics(torch.from_numpy(features)).items()}
        tracking.log_metrics(uri, run_id, {**final, "seconds": time.perf_counter() - started}, len(losses))
        carry = [c for c in cfg.carry_columns if c in table.column_names and c != cfg.spot_column]
        out_table, carried = spot_table(table, grids, cfg.spot_column, features, carry)
        meta = {"in_dim": int(embeddings.shape[1]), "model": to_dict(cfg.model), "spot_column": cfg.spot_column,
                "grid_step": list(grid_step), "steps": len(losses), "final_loss": losses[-1],
                "embeddings": tracking.redact(cfg.embeddings), "mlflow_run_id": run_id,
                "config": tracking.redact(to_dict(cfg))}
        _publish(cfg, out_table, model.teacher, meta, carried)
    except BaseException:
        tracking.end_run(uri, run_id, "FAILED")
        raise
    tracking.end_run(uri, run_id)
    return cfg.out


def _publish(cfg: AggregateConfig, table: pa.Table, encoder: SpotEncoder, meta: dict, carried: list[str]) -> None:
    staging = storage.begin_output(cfg.out, cfg.overwrite, what="spot table")
    try:
        SpotTable(cfg.out, "spot_table", table, encoder.embed_dim, cfg.spot_column).write(staging)
        save_aggregator(storage.join(staging, AGGREGATOR_DIR), encoder, meta)
    except BaseException:
        if staging != cfg.out:
            storage.remove(staging)
        raise
    info = {"embeddings": tracking.redact(cfg.embeddings), "spot_column": cfg.spot_column, "n_rows": table.num_rows,
            "dim": encoder.embed_dim, "l2_normalized": True, "carried_columns": carried,
            "aggregator": AGGREGATOR_DIR, "mlflow_run_id": meta["mlflow_run_id"]}
    storage.publish_output(staging, cfg.out, info)
