"""head.safetensors: a linear head and its class names written and read back, bad files refused by name."""

import numpy as np
import pytest

from sslray.artifacts.linear_head import HeadError, LinearHead, read_head, save_head


def _head() -> LinearHead:
    return LinearHead(np.arange(6, dtype=np.float32).reshape(3, 2), np.array([0.5, -1, 2]), ["tumor", "stroma", "fat"],
                      l2_normalized=True, per_channel=True, lineage={"checkpoint": "s3://b/ckpt"})


def test_a_head_reads_back_as_written(tmp_path):
    url = save_head(str(tmp_path / "head.safetensors"), _head())
    back = read_head(url)
    np.testing.assert_array_equal(back.weight, _head().weight)
    np.testing.assert_array_equal(back.bias, np.array([0.5, -1, 2], np.float32))
    assert back.classes == ["tumor", "stroma", "fat"] and back.l2_normalized and back.per_channel
    assert back.lineage == {"checkpoint": "s3://b/ckpt"} and back.dim == 2
    assert back.class_index("stroma", "--class") == 1


def test_an_unknown_class_is_an_error_listing_the_classes():
    with pytest.raises(HeadError, match=r"--class: class 'necrosis' is not one of the head's classes \['tumor'"):
        _head().class_index("necrosis", "--class")


def test_rows_that_do_not_match_the_classes_are_refused():
    with pytest.raises(HeadError, match="weight \\(K, D\\) and bias \\(K,\\) for its 2 classes"):
        LinearHead(np.zeros((3, 4)), np.zeros(3), ["a", "b"])


def test_a_missing_or_foreign_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(HeadError, match=f"no head file at {tmp_path}/none.safetensors; `sslray evaluate"):
        read_head(str(tmp_path / "none.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(HeadError, match=f"{bad} is not a linear head file"):
        read_head(str(bad))
    from safetensors.numpy import save_file

    save_file({"weight": np.zeros((2, 2), np.float32)}, str(tmp_path / "w.safetensors"))  # no bias, no classes
    with pytest.raises(HeadError, match="is not a linear head file"):
        read_head(str(tmp_path / "w.safetensors"))
