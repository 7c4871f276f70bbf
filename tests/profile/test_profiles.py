"""The profiles-table contract: which columns are metadata and features, and every way a table is read."""

import gzip

import numpy as np
import pandas as pd
import pytest

from sslray import storage
from sslray.profile.profiles import (PROFILES_FILE, RAW_FILE, feature_columns, metadata_columns, read_profiles,
                                     write_profiles)


def _table() -> pd.DataFrame:
    return pd.DataFrame({"Metadata_Plate": ["P1", "P1"], "Metadata_Well": ["A01", "A02"],
                         "DNA_000": [0.5, 1.5], "DNA_001": [1, 2]})


def test_metadata_and_feature_columns_split_on_the_prefix():
    df = _table()
    assert metadata_columns(df) == ["Metadata_Plate", "Metadata_Well"]
    assert feature_columns(df) == ["DNA_000", "DNA_001"]


def test_a_text_feature_column_is_an_error_naming_it():
    df = _table().assign(treatment=["a", "b"])
    with pytest.raises(ValueError, match=r"\['treatment'\] are not numeric"):
        feature_columns(df)


def test_written_profiles_read_back_as_plain_parquet(tmp_path):
    url = write_profiles(_table(), str(tmp_path / "out"))
    assert url.endswith(PROFILES_FILE)
    assert pd.read_parquet(url).equals(_table())  # any reader: plain columns, no index
    assert read_profiles(url).equals(_table())
    assert read_profiles(str(tmp_path / "out")).equals(_table())  # a plain folder of parquet


def test_an_sslray_profiles_folder_is_read_by_its_files(tmp_path):
    folder = str(tmp_path / "p")
    write_profiles(_table(), folder)
    write_profiles(_table().assign(DNA_000=[9.0, 9.0]), folder, RAW_FILE)
    with pytest.raises(FileNotFoundError, match="incomplete"):  # an sslray folder without _SUCCESS
        read_profiles(folder)
    storage.mark_complete(folder, {"kind": "profiles"})
    assert read_profiles(folder)["DNA_000"].tolist() == [0.5, 1.5]
    assert read_profiles(folder, RAW_FILE)["DNA_000"].tolist() == [9.0, 9.0]


def test_another_sslray_artifact_is_refused_by_kind(tmp_path):
    write_profiles(_table(), str(tmp_path / "e"), "part-0.parquet")
    storage.mark_complete(str(tmp_path / "e"), {"kind": "embeddings"})
    with pytest.raises(ValueError, match="is an sslray embeddings, not a profiles table"):
        read_profiles(str(tmp_path / "e"))


def test_csv_and_csv_gz_as_pycytominer_writes_them(tmp_path):
    _table().to_csv(tmp_path / "p.csv", index=False)
    (tmp_path / "p.csv.gz").write_bytes(gzip.compress((tmp_path / "p.csv").read_bytes()))
    for name in ("p.csv", "p.csv.gz"):
        got = read_profiles(str(tmp_path / name))
        assert got["Metadata_Well"].tolist() == ["A01", "A02"]
        assert np.allclose(got["DNA_000"], [0.5, 1.5])


@pytest.mark.parametrize("columns, message", [
    ({"Plate": ["P1"], "f": [1.0]}, r"p.csv: no Metadata_\* column"),
    ({"Metadata_Plate": ["P1"]}, "p.csv: no feature column"),
    ({"Metadata_Plate": ["P1"], "f": ["x"]}, r"p.csv: feature column\(s\) \['f'\] are not numeric"),
])
def test_a_table_that_is_not_a_profiles_table_is_an_error_naming_the_file(tmp_path, columns, message):
    pd.DataFrame(columns).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ValueError, match=message):
        read_profiles(str(tmp_path / "p.csv"))


def test_a_missing_path_or_another_format_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_profiles(str(tmp_path / "nothing.parquet"))
    (tmp_path / "p.h5ad").write_bytes(b"x")
    with pytest.raises(ValueError, match="expected .parquet, .csv or .csv.gz"):
        read_profiles(str(tmp_path / "p.h5ad"))
