"""Slides on object storage (a real S3-compatible server on loopback): listed, fetched one at a time."""

import os

import pytest

from sslray import storage
from sslray.data.sources import IngestError
from sslray.infer.remote import fetched, remote_sources


@pytest.fixture
def bucket_slides(s3_server, synthetic_images):
    root, _ = synthetic_images
    prefix = f"{s3_server}/remote-slides"
    for name in ("round/round_000.tif", "round/round_001.tif"):
        storage.write_bytes(f"{prefix}/{name}", (root / name).read_bytes())
    storage.write_bytes(f"{prefix}/notes.txt", b"not an image")
    return prefix


def test_a_folder_lists_its_readable_files_and_a_file_is_its_own_source(bucket_slides):
    base, sources = remote_sources(bucket_slides)
    assert base == bucket_slides and [s.rel for s in sources] == ["round/round_000.tif", "round/round_001.tif"]
    base, sources = remote_sources(f"{bucket_slides}/round/round_001.tif")
    assert base == f"{bucket_slides}/round" and [s.rel for s in sources] == ["round_001.tif"]


def test_a_missing_url_and_a_remote_slide_list_are_refused_by_name(s3_server):
    with pytest.raises(IngestError, match="nothing-here does not exist"):
        remote_sources(f"{s3_server}/nothing-here")
    with pytest.raises(IngestError, match="slide list on object storage"):
        remote_sources(f"{s3_server}/slides.csv")


def test_a_source_is_fetched_to_a_temporary_file_that_is_gone_afterwards(bucket_slides, synthetic_images):
    root, _ = synthetic_images
    base, sources = remote_sources(bucket_slides)
    with fetched(sources[0], base) as local:
        assert local.path.read_bytes() == (root / "round" / "round_000.tif").read_bytes()
        copy = local.path
    assert not os.path.exists(copy)
    with fetched(sources[0], None) as same:
        assert same is sources[0]
