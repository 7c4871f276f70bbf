"""Ingest parts: written piece by piece, trusted on resume only when intact, and a plan that guards a resume."""

from pathlib import Path

import numpy as np
import pytest

from sslray.data import parts
from sslray.data.parts import PartResult, PartWriter, PlanMismatch, check_plan, load_part, part_url, read_part


def _part(staging: str, rel: str = "a/b.png", n: int = 5) -> tuple[np.ndarray, PartResult]:
    tiles = np.arange(n * 2 * 8 * 8, dtype=np.uint16).reshape(n, 2, 8, 8)
    writer = PartWriter(staging, rel)
    writer.add(tiles[:3], [{"i": i} for i in range(3)], ["DNA", "ER"])
    writer.add(tiles[3:], [{"i": i} for i in range(3, n)], ["DNA", "ER"])
    return tiles, writer.finish()


def test_a_finished_part_reads_back_piece_by_piece(tmp_path, monkeypatch):
    monkeypatch.setattr(parts, "PIECE_BYTES", 2 * 2 * 8 * 8 * 2)  # two tiles per piece
    tiles, result = _part(str(tmp_path))
    assert result.pieces == [2, 1, 2] and result.n_tiles == 5 and result.dtype == "uint16"
    assert load_part(str(tmp_path), "a/b.png") == result == PartResult.from_json(result.to_json())
    read = list(read_part(str(tmp_path), result, 8))
    np.testing.assert_array_equal(np.concatenate([t for t, _ in read]), tiles)
    assert [r["i"] for _, rows in read for r in rows] == [0, 1, 2, 3, 4]


def test_an_unfinished_or_truncated_part_is_not_trusted(tmp_path):
    writer = PartWriter(str(tmp_path), "x.png")
    writer.add(np.zeros((1, 1, 8, 8), np.uint8), [{}], ["gray"])
    assert load_part(str(tmp_path), "x.png") is None  # no part.json yet
    _part(str(tmp_path))
    piece = Path(part_url(str(tmp_path), "a/b.png")) / "00000.blosc"
    piece.write_bytes(piece.read_bytes()[:10])
    assert load_part(str(tmp_path), "a/b.png") is None


def test_channels_cannot_change_within_one_source(tmp_path):
    writer = PartWriter(str(tmp_path), "x.png")
    writer.add(np.zeros((1, 1, 8, 8), np.uint8), [{}], ["gray"])
    with pytest.raises(ValueError, match="x.png: channels or dtype change within one source"):
        writer.add(np.zeros((1, 1, 8, 8), np.uint16), [{}], ["gray"])


def test_the_plan_resumes_only_the_same_settings_once_a_part_finished(tmp_path):
    staging = str(tmp_path / "staging")
    plan = {"tile_size": 32, "sources": [["a.png", None, None, None]]}
    assert check_plan(staging, plan) is False
    assert check_plan(staging, plan) is True
    assert check_plan(staging, {**plan, "tile_size": 16}) is False  # nothing finished yet: start over
    _part(staging)
    with pytest.raises(PlanMismatch, match=r"different tile_size \(1 source\(s\) finished\)"):
        check_plan(staging, plan)
