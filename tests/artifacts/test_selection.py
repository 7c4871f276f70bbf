"""Store views: manifest filters and channel selection, with errors that name the key."""

import numpy as np
import pytest

from sslray.artifacts.selection import Selection, SelectionError


def test_where_filters_rows_and_keeps_store_tile_ids(tiny_store):
    m = tiny_store.manifest
    view = tiny_store.select(Selection(where={"label": ["round", "punctate"]}))
    expected = np.flatnonzero(m["label"].isin(["round", "punctate"]).to_numpy())
    assert len(view) == len(expected) == view.info.n_tiles
    assert view.manifest["tile_id"].tolist() == expected.tolist()
    np.testing.assert_array_equal(view.read(0, len(view)), tiny_store.read(0, len(tiny_store))[expected])


def test_channel_selection_reorders_channels_and_their_stats(tiny_store):
    view = tiny_store.select(Selection(channels=["cytoplasm"]))
    assert view.info.channels == ["cytoplasm"] and view.info.mean == [tiny_store.info.mean[1]]
    np.testing.assert_array_equal(view.read(3, 7), tiny_store.read(3, 7)[:, [1]])
    both = tiny_store.select(Selection(channels=["cytoplasm", "DNA"], where={"label": "round"}))
    rows = np.flatnonzero((tiny_store.manifest["label"] == "round").to_numpy())
    np.testing.assert_array_equal(both.read(0, 2), tiny_store.read(0, len(tiny_store))[rows[:2]][:, [1, 0]])


def test_min_tissue_and_numeric_columns(tiny_store):
    fraction = tiny_store.manifest["tissue_fraction"].to_numpy()
    threshold = float(np.median(fraction))
    assert len(tiny_store.select(Selection(min_tissue=threshold))) == int((fraction >= threshold).sum())
    x = int(tiny_store.manifest["x"].iloc[0])
    assert len(tiny_store.select(Selection(where={"x": float(x)}))) == int((tiny_store.manifest["x"] == x).sum())


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        (Selection(where={"plate": "P1"}), r"data.where.plate: .* has no manifest column 'plate'"),
        (Selection(where={"label": "rond"}), r"data.where.label=\['rond'\]: no tile .* present: \['fragmented'"),
        (Selection(where={"x": "left"}), r"data.where.x: \['left'\] are not numbers"),
        (Selection(channels=["DAPI"]), r"data.channels: .* has no channel\(s\) \['DAPI'\]; it has \['DNA', 'cytoplasm'\]"),
        (Selection(min_tissue=1.0, where={"label": "round"}), "selects no tiles"),
    ],
)
def test_bad_selections_name_the_key_and_what_exists(tiny_store, selection, message):
    with pytest.raises(SelectionError, match=message):
        tiny_store.select(selection)


def test_selection_config_is_validated():
    with pytest.raises(SelectionError, match="data.min_tissue"):
        Selection(min_tissue=1.5)
    with pytest.raises(SelectionError, match="twice"):
        Selection(channels=["a", "a"])


def test_rows_are_sorted_indices_and_the_same_channels_need_no_index():
    import pyarrow as pa

    manifest = pa.table({"label": ["b", "a", "b", None], "tissue_fraction": [0.9, 0.2, None, 1.0]})
    rows = Selection(where={"label": "b"}, min_tissue=0.5).rows(manifest, "s")
    assert rows.tolist() == [0]  # a missing tissue fraction counts as none
    assert Selection(where={"label": ["b", "a"]}).rows(manifest, "s").tolist() == [0, 1, 2]
    assert Selection().is_everything and not Selection(min_tissue=0.1).is_everything
    assert Selection(channels=["DNA", "ER"]).channel_index(["DNA", "ER"], "s") is None
    assert Selection(channels=["ER"]).channel_index(["DNA", "ER"], "s") == [1]
