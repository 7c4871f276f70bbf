"""CheckpointMeta: sslray.json read and written with the same keys; invalid fields named with the file."""

import json

import pytest

from sslray.artifacts.checkpoint_meta import META_FILE, CheckpointError, CheckpointMeta, pooled_stats

OLD = {"model": {"name": "resnet18", "kwargs": {}, "weights": None}, "in_chans": 2, "image_size": 32,
       "scale": 255.0, "mean": [0.1, 0.2], "std": [0.3, 0.4], "embed_dim": 512, "method": "dino",
       "per_channel": False, "channels": ["a", "b"], "config": {"x": 1}, "step": 3, "format_version": 2,
       "lineage": {"store": "/s", "manifest_sha256": "f" * 64, "selection": {}},
       "files": {"encoder.safetensors": "0" * 64}}


def test_a_written_file_reads_back_equal(tmp_path):
    meta = CheckpointMeta.from_json(OLD)
    meta.write(str(tmp_path))
    assert CheckpointMeta.read(str(tmp_path)) == meta


def test_keys_are_kept_and_only_added_to(tmp_path):
    written = CheckpointMeta.from_json(OLD | {"future_key": [1]}).to_json()
    assert set(OLD) | {"future_key"} <= set(written) and written["future_key"] == [1]
    assert written["lineage"] == OLD["lineage"] | {"mlflow_run_id": None}


def test_format_1_without_files_or_version_reads():
    old = {k: v for k, v in OLD.items() if k not in ("files", "format_version", "lineage", "method")}
    meta = CheckpointMeta.from_json(old)
    assert meta.format_version == 1 and meta.files == {} and meta.method == ""


@pytest.mark.parametrize(("change", "named"), [({"in_chans": 0}, "in_chans"), ({"std": [0.3]}, "mean and std"),
                                                ({"scale": -1}, "scale"), ({"model": {"kwargs": {}}}, "name")])
def test_an_invalid_field_is_named_with_the_file(tmp_path, change, named):
    (tmp_path / META_FILE).write_text(json.dumps(OLD | change))
    with pytest.raises(CheckpointError, match=f"{META_FILE}: .*{named}"):
        CheckpointMeta.read(str(tmp_path))


def test_a_missing_required_key_is_named():
    with pytest.raises(CheckpointError, match="lacks 'image_size'"):
        CheckpointMeta.from_json({k: v for k, v in OLD.items() if k != "image_size"})


def test_pooled_stats_of_identical_channels_are_theirs():
    assert pooled_stats([0.5, 0.5], [0.2, 0.2]) == ([0.5], [pytest.approx(0.2)])


def test_optional_keys_are_written_only_when_set_and_read_back(tmp_path):
    assert not {"mpp", "layer_norm_eps", "source"} & set(CheckpointMeta.from_json(OLD).to_json())  # as before
    imported = OLD | {"mpp": 0.5, "layer_norm_eps": 1e-12, "source": {"weights": "w.pth", "sha256": "a" * 64}}
    CheckpointMeta.from_json(imported).write(str(tmp_path))
    meta = CheckpointMeta.read(str(tmp_path))
    assert (meta.mpp, meta.layer_norm_eps, meta.source["weights"], meta.format_version) == (0.5, 1e-12, "w.pth", 2)
    with pytest.raises(CheckpointError, match="mpp must be a positive number"):
        CheckpointMeta.from_json(OLD | {"mpp": 0})
