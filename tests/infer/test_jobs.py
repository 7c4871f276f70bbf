"""Embedding jobs: units, plans and schemas of a store view and of images read from files."""

from dataclasses import replace

import pyarrow as pa
import pytest

from sslray.artifacts.checkpoint import read_meta
from sslray.artifacts.selection import Selection
from sslray.data.ingest_config import IngestConfig
from sslray.data.sources import IngestError
from sslray.infer.embed import EmbedConfig
from sslray.infer.jobs import SourceJob, StoreJob, source_tiling


def test_a_store_view_has_one_unit_per_shard_group_and_a_plan_that_names_its_rows(tiny_store, checkpoint):
    meta = read_meta(checkpoint)
    view = tiny_store.select(Selection(where={"label": ["round", "spindle"]}))
    view.info = replace(view.info, shard_tiles=8)  # 8 tiles per shard: several units from a tiny store
    cfg = EmbedConfig(checkpoint=checkpoint, store=tiny_store.url, out="o")
    job = StoreJob.make(cfg, meta, view)
    assert sum(job.expected.values()) == len(view) and all(n <= 8 for n in job.expected.values())
    assert job.plan["units"] == [[int(g[0]), len(g)] for g in job.groups] and job.plan["encoder_sha256"]
    assert job.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    assert StoreJob.make(replace(cfg, l2_normalize=False), meta, view).plan != job.plan


def test_images_have_one_unit_per_source_and_a_plan_that_changes_with_the_tiling(synthetic_images, checkpoint):
    root, labels = synthetic_images
    meta = read_meta(checkpoint)
    tiling = IngestConfig(tile_size=64, labels=str(labels), channels=["DNA", "cytoplasm"])
    cfg = EmbedConfig(checkpoint=checkpoint, slides=str(root), tiling=tiling, out="o")
    job = SourceJob.make(cfg, meta)
    assert job.n_units == 24 and job.expected is None and job.unit_name(0).endswith(".tif")
    assert job.channels_plan.names == ("DNA", "cytoplasm") and job.channels_plan.count == 2
    assert {"label", "group"} <= set(job.schema.names) and "slide_id" not in job.schema.names
    strided = SourceJob.make(replace(cfg, tiling=replace(tiling, stride=32)), meta)
    assert strided.plan["tiling"]["stride"] == 32 and strided.plan != job.plan


def test_a_csv_lists_slides_relative_to_its_folder_and_an_empty_folder_is_refused(tmp_path, checkpoint):
    listing = tmp_path / "slides.csv"
    cfg = EmbedConfig(checkpoint=checkpoint, slides=str(listing), out="o")
    tiling = source_tiling(cfg)
    assert tiling.src == str(tmp_path) and tiling.labels == str(listing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="no slides or images"):
        SourceJob.make(EmbedConfig(checkpoint=checkpoint, slides=str(tmp_path / "empty"), out="o"),
                       read_meta(checkpoint))
