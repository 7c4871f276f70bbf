"""The embeddings table as partitions, one per unit of work, each committed exactly once.

An embedding job over thousands of slides must survive a killed driver, a lost node or a
pre-empted spot instance without starting over and without ever writing a tile twice. So the
output is built as one parquet file per unit of work (a store shard, a slide, a field),
``part-<unit>.parquet``, written whole (a local temp file renamed into place, or one PUT on
object storage) and then committed by ``_embed/done/<unit>.json``. A rerun of the same job
finds the committed units and embeds only the others; a unit written but not committed (the
job died between the two writes) is simply redone, its file replaced by the same rows.

``_embed/plan.json`` records what the job is (checkpoint and its weights' SHA-256, the input,
the units, the settings that change a row). A rerun with another plan is refused while any
unit is committed: partitions of two jobs never mix in one table. Readers never see any of
this: the folder is published (renamed into place, or ``_SUCCESS`` written last) only when
every unit is committed, and parquet readers skip ``_``-prefixed entries.
No Ray import: the driver commits units; Ray tasks only write ``_embed/counts``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sslray import storage

EMBED_DIR = "_embed"
PLAN_FILE = f"{EMBED_DIR}/plan.json"


class EmbedPlanMismatch(ValueError):
    """The destination holds committed partitions of a different embedding job."""


@dataclass(frozen=True)
class UnitCount:
    """What a read task found in one unit: its number of tiles, or why it could not be read."""

    n_tiles: int
    error: str | None = None
    channels: tuple[str, ...] = ()  # the channels fed to the encoder, in block order


def part_name(unit: int) -> str:
    return f"part-{unit:06d}.parquet"


def _marker(staging: str, folder: str, unit: int) -> str:
    return storage.join(staging, EMBED_DIR, folder, f"{unit:06d}.json")


def check_plan(staging: str, plan: dict[str, Any], out: str) -> set[int]:
    """Record a fresh job's plan, or confirm a rerun is the same job; returns the committed units.

    A different plan over committed units is refused (``EmbedPlanMismatch`` names what differs);
    a different plan with nothing committed is leftovers, and is replaced.
    """
    url = storage.join(staging, PLAN_FILE)
    if storage.exists(url):
        recorded = storage.read_json(url)
        done = committed_units(staging)
        if recorded == plan:
            return done
        if done:
            changed = sorted(k for k in set(plan) | set(recorded) if recorded.get(k) != plan.get(k))
            raise EmbedPlanMismatch(
                f"{out} holds {len(done)} finished partition(s) of a different embedding job (it differs in "
                f"{', '.join(changed)}); rerun that job to finish it, pass overwrite=true (--overwrite) to "
                "discard it, or choose another --out")
        for folder in ("done", "counts"):
            storage.remove(storage.join(staging, EMBED_DIR, folder))
    storage.write_json(url, plan)
    return set()


def is_partial_of(url: str, plan: dict[str, Any]) -> bool:
    """An unfinished table of this very job waits at ``url``'s staging: even ``--overwrite``
    resumes it (rerunning the same command after a kill must not start over)."""
    staging = storage.resumable_staging(url)
    if storage.is_complete(staging) and staging == url:
        return False  # on object storage a finished table, not a partial one, is in place
    return recorded_plan(staging) == plan and bool(committed_units(staging))


def committed_units(staging: str) -> set[int]:
    fs, root = storage.filesystem(storage.join(staging, EMBED_DIR, "done"))
    if not fs.exists(root):
        return set()
    return {int(p.rsplit("/", 1)[-1].split(".")[0]) for p in fs.glob(f"{root}/*.json")}


def write_unit(staging: str, unit: int, table: pa.Table) -> None:
    """The unit's rows as one whole file, then its commit marker (a unit with no tiles has only
    the marker: nothing to read, but done)."""
    if table.num_rows:
        sink = io.BytesIO()
        pq.write_table(table, sink)
        storage.write_bytes(storage.join(staging, part_name(unit)), sink.getvalue(), durable=False)
    storage.write_bytes(_marker(staging, "done", unit), json.dumps({"n_rows": table.num_rows}).encode(),
                        durable=False)


def unit_rows(staging: str, unit: int) -> int:
    """Rows of a committed unit (its marker's count)."""
    return int(storage.read_json(_marker(staging, "done", unit))["n_rows"])


def record_count(staging: str, unit: int, count: UnitCount) -> None:
    """Written by the read task when it has read the whole unit (or failed to)."""
    storage.write_bytes(_marker(staging, "counts", unit),
                        json.dumps({"n_tiles": count.n_tiles, "error": count.error,
                                    "channels": list(count.channels)}).encode(), durable=False)


def read_count(staging: str, unit: int) -> UnitCount | None:
    """The read task's count for ``unit``, or None while it is still reading."""
    url = _marker(staging, "counts", unit)
    try:
        saved = json.loads(storage.read_bytes(url))
    except (FileNotFoundError, ValueError):
        return None
    return UnitCount(int(saved["n_tiles"]), saved.get("error"), tuple(saved.get("channels") or ()))


def finish(staging: str) -> None:
    """Drop the read tasks' counts once every unit is committed, just before publication. The plan
    and the commit markers stay (tiny, and skipped by parquet readers): a rerun of a finished job
    sees that it is finished."""
    storage.remove(storage.join(staging, EMBED_DIR, "counts"))


def recorded_plan(url: str) -> dict[str, Any] | None:
    """The plan a published table was made by (None for tables written before plans existed)."""
    try:
        return storage.read_json(storage.join(url, PLAN_FILE))
    except (FileNotFoundError, ValueError):
        return None
