"""`sslray checkpoint import`: flags become the ImportSpec, the result is one line, bad input exits 2."""

import json

import pytest
import torch

from sslray.artifacts.checkpoint import read_meta
from sslray.cli import main
from sslray.models.backbones import BackboneConfig, create_backbone

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}


@pytest.fixture
def weights(tmp_path) -> str:
    torch.manual_seed(0)
    path = tmp_path / "teacher.pth"
    torch.save({"teacher": create_backbone(BackboneConfig("vit_tiny_patch16_224", TINY), 3).state_dict()}, path)
    return str(path)


def _import(weights: str, out: str, *more: str) -> int:
    return main(["checkpoint", "import", "--model", "vit_tiny_patch16_224", "--weights", weights, "--out", out,
                 "--model-kwargs", json.dumps(TINY), *more])


def test_flags_reach_the_checkpoint(weights, tmp_path, capsys):
    out = str(tmp_path / "ckpt")
    assert _import(weights, out, "--in-chans", "2", "--mean", "0.1,0.2", "--std", "0.3,0.4", "--image-size", "48",
                   "--mpp", "0.25", "--scale", "65535") == 0
    meta = read_meta(out)
    assert (meta.in_chans, meta.mean, meta.std, meta.image_size, meta.mpp, meta.scale) == \
        (2, [0.1, 0.2], [0.3, 0.4], 48, 0.25, 65535.0)
    assert meta.model.kwargs == TINY and meta.source["layout"] == "timm"
    assert capsys.readouterr().out == (f"wrote checkpoint {out}: vit_tiny_patch16_224 (timm layout), 32-d features of "
                                       "2-channel 48-px tiles\n")


def test_an_input_problem_is_one_line_and_exit_2(weights, tmp_path, capsys):
    assert _import(weights, str(tmp_path / "ckpt"), "--layout", "hf_vit") == 2
    err = capsys.readouterr().err
    assert err.startswith("sslray checkpoint: error: ") and "keys are in the timm layout" in err
    assert err.count("\n") == 1 and not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize(("flag", "value", "named"), [("--mean", "0.1,x", "comma-separated numbers"),
                                                      ("--model-kwargs", "[1]", "a JSON object")])
def test_malformed_flags_are_named(weights, tmp_path, capsys, flag, value, named):
    with pytest.raises(SystemExit) as exit_info:
        _import(weights, str(tmp_path / "ckpt"), flag, value)
    assert exit_info.value.code == 2 and named in capsys.readouterr().err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["checkpoint", "import", "--help"])
    out = capsys.readouterr().out
    assert "examples" in out and "sslray checkpoint import --model vit_base_patch16_224" in out
