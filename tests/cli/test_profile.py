"""``sslray profile`` through ``sslray.cli.main``: flags and overrides become the ProfileConfig, the
stage runs, and bad input ends in one line naming it."""

import pytest

from sslray.cli import main
from sslray.profile.profiles import RAW_FILE, feature_columns, read_profiles
from tests.conftest import ROOT
from tests.profile.tables import write_embeddings, write_plate_map


@pytest.fixture(autouse=True)
def _no_outside_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SSLRAY_PARENT_RUN_ID", raising=False)


def test_profile_runs_from_the_shipped_config_with_flags_and_overrides(tmp_path, capsys):
    emb, plate_map = write_embeddings(tmp_path / "emb"), write_plate_map(tmp_path / "platemap.csv")
    out = str(tmp_path / "profiles")
    code = main(["profile", "--embeddings", emb, "--out", out, "--metadata", plate_map,
                 "--config", str(ROOT / "configs" / "profile" / "cellpainting.yaml"), "level=perturbation",
                 f"run_dir={tmp_path / 'runs'}", "control=Metadata_perturbation == 'DMSO'"])
    assert code == 0
    assert capsys.readouterr().out.strip() == f"wrote 3 perturbation profiles (12 wells, 8 features) to {out}"
    assert read_profiles(out)["Metadata_perturbation"].tolist() == ["DMSO", "cmpd0", "cmpd1"]
    assert feature_columns(read_profiles(out, RAW_FILE))[:2] == ["DNA_000", "DNA_001"]


def test_bad_input_is_one_line_naming_it(tmp_path, capsys):
    emb = write_embeddings(tmp_path / "emb")
    (tmp_path / "map.csv").write_text("plate,well\nP1,A01\nP9,A01\n")
    code = main(["profile", "--embeddings", emb, "--out", str(tmp_path / "p"), "--metadata",
                 str(tmp_path / "map.csv"), f"run_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert code == 2 and "sslray profile: error: plate map" in err and "['P9/A01']" in err
    assert main(["profile", "--embeddings", emb, "--out", str(tmp_path / "p"), "normalize=[{name: whiten}]"]) == 2
    assert "unknown normalisation step 'whiten'" in capsys.readouterr().err
