"""Magnification pairs for MPCS: policies, fields, restrictions, errors."""

import numpy as np
import pyarrow as pa
import pytest

from sslray.data.pairs import PairError, PairPolicy, make_pairs


def _manifest(tiles=2):
    """Two fields at 40/100/200/400X, ``tiles`` tiles per (field, magnification)."""
    fields, mags = [], []
    for field in ("F1", "F2"):
        for mag in (40.0, 100.0, 200.0, 400.0):
            fields += [field] * tiles
            mags += [mag] * tiles
    return pa.table({"field_id": fields, "magnification": mags})


def _check_same_field(m, pairs):
    fields = np.asarray(m.column("field_id").to_pylist())
    assert (fields[pairs[:, 0]] == fields[pairs[:, 1]]).all()


def test_ordered_pairs_each_magnification_with_the_next():
    m = _manifest()
    pairs = make_pairs(m, PairPolicy("ordered"), rng=np.random.default_rng(0))
    mags = m.column("magnification").to_numpy()
    assert len(pairs) == 12  # every tile but those at 400X
    assert {(mags[a], mags[b]) for a, b in pairs} == {(40.0, 100.0), (100.0, 200.0), (200.0, 400.0)}
    _check_same_field(m, pairs)
    assert (np.diff(pairs[:, 0]) > 0).all()  # anchors sorted, each once: sequential shard reads


def test_fixed_and_random_policies():
    m = _manifest()
    mags = m.column("magnification").to_numpy()
    fixed = make_pairs(m, PairPolicy("fixed", (200.0, 400.0)), rng=np.random.default_rng(0))
    assert {(mags[a], mags[b]) for a, b in fixed} == {(200.0, 400.0)} and len(fixed) == 4
    first = make_pairs(m, PairPolicy("random"), rng=np.random.default_rng(1))
    second = make_pairs(m, PairPolicy("random"), rng=np.random.default_rng(2))
    assert len(first) == 16 and (mags[first[:, 0]] != mags[first[:, 1]]).all()
    _check_same_field(m, first)
    assert not np.array_equal(first, second)  # redrawn every epoch
    big = _manifest(tiles=12)
    big_mags = big.column("magnification").to_numpy()
    drawn = make_pairs(big, PairPolicy("random"), rng=np.random.default_rng(0))
    assert len({big_mags[b] for a, b in drawn if big_mags[a] == 40.0}) == 3  # per tile, not one level per field


def test_rows_restrict_both_ends_and_errors_name_what_is_missing():
    m = _manifest()
    rows = np.arange(8)  # field F1 only
    pairs = make_pairs(m, PairPolicy("ordered"), rows, np.random.default_rng(0))
    assert set(pairs.ravel()) <= set(rows.tolist())
    with pytest.raises(PairError, match="--magnification-groups"):
        make_pairs(pa.table({"label": ["a"]}), PairPolicy())
    with pytest.raises(PairError, match="no field has two magnifications"):
        make_pairs(m, PairPolicy("ordered"), np.array([0, 1]))
    with pytest.raises(ValueError, match="method.pair_policy"):
        PairPolicy("nearest")
