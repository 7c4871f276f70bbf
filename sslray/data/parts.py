"""Ingest parts: what one source file became, kept in the staging area until the store is assembled.

Sources are tiled in parallel and finish in any order, but the store's rows must follow
the source order so that the same sources always give the same store. So each source is
first written as a *part* (its tiles in compressed pieces plus its manifest rows), and the
parts are assembled in source order at the end. A part counts only once its ``part.json``
exists, written last: an interrupted ingest resumes by redoing exactly the sources without
one, and a part cut off half-way is simply redone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sslray import storage

INGEST_DIR = "_ingest"
PLAN = f"{INGEST_DIR}/plan.json"
PIECE_BYTES = 64 << 20  # Blosc handles < 2 GiB per buffer; 64 MiB keeps worker memory flat


@dataclass
class PartResult:
    """What the driver learns about one source after tiling it."""

    rel: str
    ok: bool
    n_tiles: int = 0
    reason: str = ""
    channels: list[str] = field(default_factory=list)
    dtype: str = ""
    pieces: list[int] = field(default_factory=list)  # tiles per piece file, in order
    piece_bytes: list[int] = field(default_factory=list)  # their sizes, checked before a resume trusts them

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PartResult:
        return cls(**json.loads(text))


def part_url(staging: str, rel: str) -> str:
    """A part's folder, named by a hash of the source path (paths may hold any character)."""
    return storage.join(staging, INGEST_DIR, "parts", hashlib.sha1(rel.encode()).hexdigest()[:20])


def _codec():
    from numcodecs import Blosc

    return Blosc(cname="lz4", clevel=1, shuffle=Blosc.SHUFFLE)  # fast: the store recompresses with zstd


class PartWriter:
    """Writes one source's tiles as pieces; ``finish`` publishes the part."""

    def __init__(self, staging: str, rel: str) -> None:
        self.url = part_url(staging, rel)
        self.rel = rel
        self.rows: list[dict[str, Any]] = []
        self.pieces: list[int] = []
        self.piece_bytes: list[int] = []
        self.channels: list[str] = []
        self.dtype = ""

    def add(self, tiles: np.ndarray, rows: list[dict[str, Any]], channels: list[str]) -> None:
        if self.pieces and (channels != self.channels or str(tiles.dtype) != self.dtype):
            raise ValueError(f"{self.rel}: channels or dtype change within one source")
        self.channels, self.dtype = list(channels), str(tiles.dtype)
        per_piece = max(1, PIECE_BYTES // max(1, tiles[0].nbytes))
        for start in range(0, len(tiles), per_piece):
            piece = np.ascontiguousarray(tiles[start : start + per_piece])
            encoded = _codec().encode(piece)
            # Not fsynced: parts must survive a killed process, and the sizes in part.json
            # catch what a power cut could truncate.
            storage.write_bytes(storage.join(self.url, f"{len(self.pieces):05d}.blosc"), encoded, durable=False)
            self.pieces.append(len(piece))
            self.piece_bytes.append(len(encoded))
        self.rows.extend(rows)

    def finish(self) -> PartResult:
        rows = json.dumps(self.rows).encode()
        result = PartResult(self.rel, True, sum(self.pieces), channels=self.channels, dtype=self.dtype,
                            pieces=self.pieces, piece_bytes=[*self.piece_bytes, len(rows)])
        storage.write_bytes(storage.join(self.url, "rows.json"), rows, durable=False)
        storage.write_bytes(storage.join(self.url, "part.json"), result.to_json().encode(), durable=False)
        return result


def load_part(staging: str, rel: str) -> PartResult | None:
    """The finished, intact part of ``rel``, or None when it must be (re)done."""
    url = part_url(staging, rel)
    marker = storage.join(url, "part.json")
    try:
        part = PartResult.from_json(storage.read_bytes(marker).decode())
    except (FileNotFoundError, ValueError, TypeError):
        return None  # never finished, or its marker was cut short
    fs, root = storage.filesystem(url)
    files = [f"{i:05d}.blosc" for i in range(len(part.pieces))] + ["rows.json"]
    try:
        intact = all(fs.size(f"{root}/{name}") == size for name, size in zip(files, part.piece_bytes, strict=True))
    except (FileNotFoundError, ValueError):
        intact = False
    return part if intact else None


def discard_part(staging: str, rel: str) -> None:
    storage.remove(part_url(staging, rel))


def read_part(staging: str, part: PartResult, tile_size: int) -> Iterator[tuple[np.ndarray, list[dict[str, Any]]]]:
    """(tiles, rows) piece by piece, in the order they were written."""
    url = part_url(staging, part.rel)
    rows = json.loads(storage.read_bytes(storage.join(url, "rows.json")))
    shape = (len(part.channels), tile_size, tile_size)
    start = 0
    for index, count in enumerate(part.pieces):
        raw = _codec().decode(storage.read_bytes(storage.join(url, f"{index:05d}.blosc")))
        yield np.frombuffer(raw, dtype=part.dtype).reshape(count, *shape), rows[start : start + count]
        start += count


def check_plan(staging: str, plan: dict[str, Any]) -> bool:
    """Record the plan of a fresh ingest, or confirm a rerun follows the recorded one.

    Returns True when an earlier, interrupted ingest with the same plan is being resumed;
    raises ``PlanMismatch`` when the recorded plan differs (other settings or sources).
    """
    url = storage.join(staging, PLAN)
    if storage.exists(url):
        recorded = storage.read_json(url)
        if recorded == plan:
            return True
        finished = count_finished_parts(staging)
        if finished:  # tiles made with other settings must not mix with new ones, nor be dropped silently
            changed = sorted(k for k in plan if recorded.get(k) != plan[k])
            raise PlanMismatch(f"an interrupted ingest with different {', '.join(changed)} "
                               f"({finished} source(s) finished) is kept in {staging}")
    storage.remove(staging)  # nothing worth resuming: a plan with no finished part, or leftovers
    storage.write_json(url, plan)
    return False


def count_finished_parts(staging: str) -> int:
    fs, root = storage.filesystem(storage.join(staging, INGEST_DIR, "parts"))
    return len(fs.glob(f"{root}/*/part.json"))


class PlanMismatch(ValueError):
    pass
