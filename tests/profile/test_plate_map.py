"""The plate map and the tiles' metadata: one naming, keyed by plate + well, and every mismatch named."""

import pandas as pd
import pytest

from sslray.profile.plate_map import check_wells, join_plate_map, metadata_name, read_plate_map, tile_metadata
from sslray.profile.profiles import PLATE, SITE, WELL


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "platemap.csv"
    path.write_text(text)
    return str(path)


def test_plain_and_metadata_prefixed_names_mean_the_same_columns():
    assert [metadata_name(c) for c in ("plate", "Metadata_plate", "Well", "moa", "Metadata_moa")] == [
        PLATE, PLATE, WELL, "Metadata_moa", "Metadata_moa"]


def test_the_plate_map_is_read_with_wells_normalised(tmp_path):
    table = read_plate_map(_write(tmp_path, "plate,well,perturbation,control,moa\n"
                                            "0001,c3,DMSO,True,\nBR1,r01c02,cmpd,False,tubulin\n"))
    assert table[PLATE].tolist() == ["0001", "BR1"]  # plates stay text: 0001 is not 1
    assert table[WELL].tolist() == ["C03", "A02"]
    assert table["Metadata_control"].tolist() == [True, False]
    assert list(table.columns) == [PLATE, WELL, "Metadata_perturbation", "Metadata_control", "Metadata_moa"]


@pytest.mark.parametrize("text, message", [
    ("plate,perturbation\nP1,DMSO\n", "has no well column"),
    ("well,perturbation\nA01,DMSO\n", "has no plate column"),
    ("plate,well\nP1,A01\nP1,a1\n", r"lists plate/well \['P1/A01'\] more than once"),
    ("plate,well\nP1,A01\nP1,Z99\n", "row 3: well 'Z99' is off the plate"),
    ("plate,Metadata_Plate,well\nP1,P1,A01\n", "all mean Metadata_Plate"),
    ("plate,well,site\nP1,A01,1\n", "has a site column"),
])
def test_a_bad_plate_map_is_an_error_naming_the_file_and_what_is_wrong(tmp_path, text, message):
    url = _write(tmp_path, text)
    with pytest.raises(ValueError, match=message) as err:
        read_plate_map(url)
    assert url in str(err.value)


def test_tile_metadata_takes_the_plate_from_the_source_folder_without_a_plate_column():
    tiles = pd.DataFrame({"source": ["BR00143976/r03c03f01p01-ch1.tiff", "BR00143976/r03c03f02p01-ch1.tiff"],
                          "image_id": ["i1", "i2"], "well": ["r03c03", "r03c03"], "site": ["01", "02"],
                          "batch": ["b1", "b1"], "tissue_fraction": [0.5, 0.2], "x": [0, 0]})
    meta = tile_metadata(tiles, "emb")
    assert meta[PLATE].tolist() == ["BR00143976"] * 2 and meta[WELL].tolist() == ["C03"] * 2
    assert meta[SITE].tolist() == ["01", "02"] and meta["Metadata_batch"].tolist() == ["b1", "b1"]
    assert "Metadata_tissue_fraction" not in meta and "Metadata_x" not in meta  # tile columns stay out


def test_tile_metadata_uses_a_plate_column_and_image_id_as_the_site():
    tiles = pd.DataFrame({"source": ["a.tif"], "image_id": ["img7"], "well": ["B2"], "plate": [3]})
    meta = tile_metadata(tiles, "emb")
    assert meta[[PLATE, WELL, SITE]].values.tolist() == [["3", "B02", "img7"]]


@pytest.mark.parametrize("tiles, message", [
    (pd.DataFrame({"source": ["P/a.tif"], "image_id": ["i"]}), "emb has no 'well' column"),
    (pd.DataFrame({"source": ["a.tif"], "image_id": ["i"], "well": ["A1"]}), "source 'a.tif' is in no folder"),
    (pd.DataFrame({"source": ["P/a.tif"], "image_id": ["i"], "well": ["?"]}), "emb: well '\\?'"),
])
def test_tiles_without_a_well_or_plate_are_an_error_naming_the_table(tiles, message):
    with pytest.raises(ValueError, match=message):
        tile_metadata(tiles, "emb")


def _wells(*pairs) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=[PLATE, WELL])


def test_plate_map_wells_without_tiles_are_listed():
    with pytest.raises(ValueError, match=r"names 2 plate/well\(s\) with no tiles: \['P1/A02', 'P2/A01'\]"):
        check_wells(_wells(("P1", "A01"), ("P1", "A02"), ("P2", "A01")), _wells(("P1", "A01")), "map.csv")


def test_wells_with_tiles_but_no_plate_map_row_are_listed():
    with pytest.raises(ValueError, match=r"has no row for 1 plate/well\(s\) with tiles: \['P1/B01'\]"):
        check_wells(_wells(("P1", "A01")), _wells(("P1", "A01"), ("P1", "B01")), "map.csv")


def test_the_join_adds_the_map_columns_and_the_map_wins():
    profiles = pd.DataFrame({PLATE: ["P1", "P1"], WELL: ["A01", "A02"], "Metadata_batch": ["x", "x"],
                             "f0": [1.0, 2.0]})
    plate_map = pd.DataFrame({PLATE: ["P1", "P1"], WELL: ["A02", "A01"], "Metadata_batch": ["b1", "b2"],
                              "Metadata_control": [False, True]})
    joined = join_plate_map(profiles, plate_map)
    assert list(joined.columns) == [PLATE, WELL, "Metadata_batch", "Metadata_control", "f0"]
    assert joined["Metadata_batch"].tolist() == ["b2", "b1"] and joined["f0"].tolist() == [1.0, 2.0]
