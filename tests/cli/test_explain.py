"""``sslray explain``: its help with examples, flags as config keys, and a run that prints what it wrote."""

import pytest

from sslray.cli import build_parser, main
from sslray.cli.explain import overrides


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "sslray explain --checkpoint" in out and "--head" in out


def test_flags_become_config_keys():
    args = build_parser().parse_args(["explain", "--checkpoint", "ck", "--slides", "s.svs", "--out", "o",
                                      "--images", "a/b,c", "--head", "h.safetensors", "--class", "TUM",
                                      "--mask-channel", "tissue", "--mpp", "1.0", "--tile-size", "112", "n_images=2"])
    assert overrides(args) == ['checkpoint="ck"', 'out="o"', 'slides="s.svs"', 'images=["a/b", "c"]',
                               'head="h.safetensors"', 'class_name="TUM"', 'mask_channel="tissue"',
                               "tiling.mpp=1.0", "tiling.tile_size=112"]
    assert args.overrides == ["n_images=2"]


def test_one_input_is_required(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--checkpoint", "ck", "--out", "o"])
    assert "one of the arguments --store --slides is required" in capsys.readouterr().err


def test_a_run_prints_what_it_wrote_and_an_unknown_image_is_one_line(tmp_path, tiny_store, capsys, monkeypatch):
    from tests.explain.conftest import TINY_VIT, save_tiny

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    checkpoint = save_tiny(str(tmp_path / "vit"), TINY_VIT, 2, False, ["DNA", "cytoplasm"], 32)
    base = ["explain", "--checkpoint", checkpoint, "--store", tiny_store.url, f"run_dir={tmp_path}/runs"]
    assert main([*base, "--out", str(tmp_path / "e"), "n_images=1", "--max-tiles", "2"]) == 0
    assert capsys.readouterr().out == f"wrote attention maps of 1 image(s), 2 tiles, to {tmp_path / 'e'}\n"
    assert main([*base, "--out", str(tmp_path / "f"), "--images", "nope"]) == 2
    assert "sslray explain: error: image 'nope' is not in tile store" in capsys.readouterr().err
