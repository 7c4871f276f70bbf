"""Magnification pairs for MPCS: the same field seen at two magnifications.

Chhipa et al., "Magnification Prior: A Self-Supervised Method for Learning Representations
on Breast Cancer Histopathological Images", WACV 2023 (arXiv:2203.07707). The positive pair
of a contrastive step is one field at two magnifications, drawn by a *policy*:

- ``ordered``: each magnification with the next one up (40->100, 100->200, 200->400);
- ``random``: any two different magnifications of the field, drawn afresh every epoch;
- ``fixed``: one chosen pair of magnifications (the paper's 200/400).

Fields and magnifications come from the manifest (``field_id``, ``magnification``), as
written by ``sslray ingest --magnification-groups`` or a labels CSV. A tile is paired with
a random tile of its field at the partner magnification.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


class PairError(ValueError):
    """The store cannot give magnification pairs; the message says what is missing."""


@dataclass(frozen=True)
class PairPolicy:
    kind: str = "ordered"  # ordered | random | fixed
    fixed: tuple[float, float] = (200.0, 400.0)

    def __post_init__(self) -> None:
        if self.kind not in ("ordered", "random", "fixed"):
            raise ValueError(f"method.pair_policy must be ordered, random or fixed, got {self.kind!r}")


def make_pairs(manifest: pa.Table, policy: PairPolicy, rows: np.ndarray | None = None,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """(N, 2) store rows ``[anchor, partner]``, anchor and partner of one field at two magnifications.

    ``rows`` restricts both ends to a view of the store.
    """
    rng = rng or np.random.default_rng()
    fields, magnifications = _columns(manifest)
    candidates = np.arange(len(fields)) if rows is None else np.asarray(rows)
    tiles_at = _index(fields[candidates], magnifications[candidates], candidates)
    anchors, partners = [], []
    levels_of: dict = {}
    for field, magnification in tiles_at:
        levels_of.setdefault(field, []).append(magnification)
    for (field, magnification), tiles in tiles_at.items():
        targets = _partner_levels(magnification, sorted(levels_of[field]), policy)
        if not targets:
            continue
        chosen = rng.integers(0, len(targets), size=len(tiles))  # per tile, so "random" mixes levels
        for k, target in enumerate(targets):
            mine = tiles[chosen == k]
            pool = tiles_at[(field, target)]
            anchors.append(mine)
            partners.append(pool[rng.integers(0, len(pool), size=len(mine))])
    if not anchors:
        raise PairError(f"no field has two magnifications for the {policy.kind!r} pair policy "
                        f"(magnifications present: {sorted(set(magnifications[candidates].tolist()))})")
    pairs = np.stack([np.concatenate(anchors), np.concatenate(partners)], axis=1)
    return pairs[np.argsort(pairs[:, 0], kind="stable")]


def _columns(manifest: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    missing = [c for c in ("field_id", "magnification") if c not in manifest.column_names]
    if missing:
        raise PairError(f"the manifest has no {missing} column(s): ingest with --magnification-groups, or give "
                        "field_id and magnification columns in the labels CSV")
    fields = np.asarray(manifest.column("field_id").to_pylist(), dtype=object)
    magnifications = manifest.column("magnification").to_numpy(zero_copy_only=False).astype(float)
    return fields, magnifications


def _index(fields: np.ndarray, magnifications: np.ndarray, rows: np.ndarray) -> dict[tuple, np.ndarray]:
    order = np.lexsort((magnifications, fields.astype(str)))
    index: dict[tuple, list[int]] = {}
    for i in order:
        index.setdefault((fields[i], magnifications[i]), []).append(int(rows[i]))
    return {k: np.asarray(v) for k, v in index.items()}


def _partner_levels(level: float, levels: list[float], policy: PairPolicy) -> list[float]:
    """The magnifications a tile at ``level`` may be paired with, of its field's ``levels``."""
    if policy.kind == "ordered":
        higher = [m for m in levels if m > level]
        return higher[:1]
    if policy.kind == "fixed":
        return [policy.fixed[1]] if level == policy.fixed[0] and policy.fixed[1] in levels else []
    return [m for m in levels if m != level]
