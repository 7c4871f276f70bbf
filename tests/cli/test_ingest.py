"""`sslray ingest` loads its config like every stage: YAML, then flags (shortcuts), then key=value."""

from pathlib import Path

import numpy as np
import pytest

from sslray.cli import build_parser, main
from sslray.cli.ingest import channel_names, flag_overrides
from sslray.config import load_config
from sslray.data.ingest import IngestConfig, ingest_folder

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
JUMP = r"(?P<well>r\d+c\d+)f(?P<site>\d+)p\d+-ch(?P<channel>\d+)"


def _config(*argv: str) -> IngestConfig:
    args = build_parser().parse_args(["ingest", *argv])
    return load_config(IngestConfig, args.config, [*flag_overrides(args), *args.overrides])


def test_flags_and_dotted_overrides_give_the_same_config():
    flags = _config("src", "dest", "--tile-size", "96", "--layout", "channel-files", "--channel-pattern", JUMP,
                    "--channel-names", "1=DNA,2=ER", "--channels", "1,2", "--clip-percentiles", "0.5,99.5",
                    "--log1p", "--workers", "0", "--max-pixels", "1000", "--on-error", "skip", "--stride", "48")
    keys = _config("src", "dest", "tile_size=96", "stride=48", "layout=channel-files", f"channel_pattern='{JUMP}'",
                   "channel_names.1=DNA", "channel_names.2=ER", "channels=['1','2']",
                   "clip_percentiles=[0.5,99.5]", "log1p=true", "workers=0", "max_pixels=1000", "on_error=skip")
    assert flags == keys
    assert flags.channel_pattern == JUMP and flags.channel_names == {"1": "DNA", "2": "ER"}


def test_no_flag_is_the_defaults():
    assert _config("src", "dest") == IngestConfig(src="src", out="dest")


def test_flags_override_the_file_and_key_values_override_the_flags(tmp_path):
    (tmp_path / "ingest.yaml").write_text("tile_size: 128\ncompression: zstd\nmin_tissue: 0.5\n")
    cfg = _config("--config", str(tmp_path / "ingest.yaml"), "src", "dest", "--tile-size", "64",
                  "--min-tissue", "0.1", "min_tissue=0.2")
    assert (cfg.tile_size, cfg.compression, cfg.min_tissue) == (64, "zstd", 0.2)  # an unset flag hides nothing


def test_unknown_key_is_an_error_naming_it(capsys, tmp_path):
    assert main(["ingest", str(tmp_path), str(tmp_path / "dest"), "--workers", "0", "tile_sise=32"]) == 2
    err = capsys.readouterr().err
    assert "'tile_sise'" in err and "tile_size" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("option", ["--float-max", "--clip-percentiles"])
def test_numbers_are_checked_naming_the_option(capsys, tmp_path, option):
    assert main(["ingest", str(tmp_path), str(tmp_path / "dest"), option, "0.5,lots"]) == 2
    assert f"{option} '0.5,lots': expected a number" in capsys.readouterr().err


def test_ingest_error_names_the_file(capsys, tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "bad.png").write_bytes(b"nope")
    assert main(["ingest", str(tmp_path / "src"), str(tmp_path / "dest"), "--tile-size", "16", "--workers", "0"]) == 2
    assert "bad.png" in capsys.readouterr().err
    assert not (tmp_path / "dest").exists()


def test_a_single_file_src_ingests_and_labels_with_it_are_an_error(capsys, tmp_path):
    image = tmp_path / "field.npy"
    np.save(image, np.zeros((1, 40, 48), np.uint8))
    assert main(["ingest", str(image), str(tmp_path / "dest"), "--tile-size", "16", "--stride", "8", "--workers", "0"]) == 0
    assert "wrote 20 tiles (gray; uint8)" in capsys.readouterr().out  # 5 x 4 origins every 8 px
    assert main(["ingest", str(image), str(tmp_path / "d2"), "--labels", "x.csv", "--workers", "0"]) == 2
    assert "field.npy is a single file: --labels" in capsys.readouterr().err


def test_channel_names_from_pairs_or_csv(tmp_path):
    assert channel_names("1=DNA,2=ER") == {"1": "DNA", "2": "ER"}
    (tmp_path / "names.csv").write_text("key,name\nch1,DAPI\n")
    assert channel_names(str(tmp_path / "names.csv")) == {"ch1": "DAPI"}
    with pytest.raises(ValueError, match="KEY=NAME"):
        channel_names("1=DNA,2")


def test_cell_painting_config_ingests_a_real_site(test_data, tmp_path):
    cfg = load_config(IngestConfig, CONFIGS / "ingest" / "cell_painting.yaml",
                      [f"src={test_data / 'cellpainting'}", f"dest={tmp_path / 'store'}", "workers=0"])
    store = ingest_folder(cfg)
    assert store.info.channels == ["DNA", "ER", "RNA", "AGP", "Mito"]
    assert set(store.manifest["well"]) == {"r03c03"} and len(store) == (1080 // 224) ** 2
