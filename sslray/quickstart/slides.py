"""The quickstart's slide-level question: synthetic "slides" whose label hangs on a small focus.

A slide is ``FIELDS_PER_SLIDE`` (4) fields of view of the synthetic cell set. A negative slide
holds background fields only; a positive one swaps one of them for a field of the ``FOCUS``
class, as a tumour focus covers a minority of a slide (a quarter of its tiles here; the default
set makes 40 slides). The slides are composed from an embeddings table
(each field's tiles keep their own embedding), so the SSL and the random-init encoders answer
the same question, and ``sslray evaluate --protocol mil`` scores them (docs/protocols.md,
"MIL over bags of tiles"). No Ray import.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sslray import storage
from sslray.artifacts.vector_table import EMBEDDING, VectorTable
from sslray.stage import publishing

FOCUS = "punctate"  # the class that makes a slide positive
FIELDS_PER_SLIDE = 4
POSITIVE, NEGATIVE = "focus", "no_focus"
# The CPU-sized grid the quickstart runs (the full protocol is configs/evaluate/mil.yaml).
MIL_SETTINGS = {"heads": ["mean_pool", "abmil"], "lrs": [1e-3], "weight_decays": [1e-4], "epochs": 30,
                "n_outer": 3, "n_inner": 3}


def plan_slides(fields_by_class: dict[str, list[str]], seed: int = 0) -> dict[str, tuple[str, list[str]]]:
    """slide id -> (label, its fields): as many positive as negative slides as the background allows,
    each positive with exactly one focus field; no field is used twice."""
    rng = np.random.default_rng(seed)
    focus = list(rng.permutation(fields_by_class.get(FOCUS, [])))
    background = list(rng.permutation([f for c, fs in sorted(fields_by_class.items()) if c != FOCUS for f in fs]))
    per_pair = 2 * FIELDS_PER_SLIDE - 1  # a positive and a negative slide
    n_pairs = min(len(focus), len(background) // per_pair)
    if n_pairs < 2:
        raise ValueError(f"too few fields to compose slides: {len(focus)} {FOCUS!r} and {len(background)} other "
                         f"fields make {n_pairs} positive/negative pairs; MIL needs at least 2")
    slides = {}
    for i in range(n_pairs):
        chunk = background[i * per_pair:(i + 1) * per_pair]
        slides[f"slide{2 * i:03d}"] = (POSITIVE, [focus[i], *chunk[:FIELDS_PER_SLIDE - 1]])
        slides[f"slide{2 * i + 1:03d}"] = (NEGATIVE, chunk[FIELDS_PER_SLIDE - 1:])
    return slides


def compose_slides(embeddings: str, out: str, seed: int = 0) -> str:
    """Publish at ``out`` the tiles of every planned slide with ``slide_id``, ``patient_id`` and the
    slide's ``label`` (the tile's own class kept as ``tile_label``); returns ``out``."""
    vectors = VectorTable.read(embeddings, ("embeddings",))
    table = vectors.table
    image = np.asarray(table.column("image_id").to_pylist(), dtype=object)
    label = np.asarray(table.column("label").to_pylist(), dtype=object)
    fields: dict[str, list[str]] = {}
    for field_id, cls in sorted({(str(i), str(c)) for i, c in zip(image, label)}):
        fields.setdefault(cls, []).append(field_id)
    slides = plan_slides(fields, seed)
    slide_of = {f: s for s, (_, fs) in slides.items() for f in fs}
    rows = np.flatnonzero([str(i) in slide_of for i in image])
    slide_ids = [slide_of[str(image[r])] for r in rows]
    composed = pa.table({
        "tile_id": table.column("tile_id").take(rows), "image_id": table.column("image_id").take(rows),
        "slide_id": slide_ids, "patient_id": slide_ids, "label": [slides[s][0] for s in slide_ids],
        "tile_label": table.column("label").take(rows), EMBEDDING: table.column(EMBEDDING).take(rows)})
    source = storage.read_json(storage.join(embeddings, storage.SUCCESS_MARKER))
    with publishing(out, kind="embeddings", what="slide table", overwrite=True) as output:
        fs, path = storage.filesystem(storage.join(output.staging, "part-0.parquet"))
        with fs.open(path, "wb") as handle:
            pq.write_table(composed, handle)
        output.info.update({"source": embeddings, "checkpoint": source.get("checkpoint"), "n_slides": len(slides),
                            "focus": FOCUS, "fields_per_slide": FIELDS_PER_SLIDE})
    return out
