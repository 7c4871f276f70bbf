"""The stage subcommands: flags and ``key=value`` arguments become the stage's config, handed to the
library unchanged; what the stage returns is printed. The stages themselves are replaced here."""

import json
from types import SimpleNamespace

import pytest

from sslray.cli import main
from sslray.config import to_dict


@pytest.fixture
def captured(monkeypatch):
    """Replace each stage's library entry point by one that records the config it was given."""
    configs = {}

    def stage(name, result):
        def run(cfg):
            configs[name] = cfg
            return result
        return run

    monkeypatch.setattr("sslray.train.driver.run_pretrain", stage("pretrain", SimpleNamespace(
        checkpoint="/runs/ckpt", run_id="r1", tracking_uri="sqlite:///m.db", steps=5)))
    monkeypatch.setattr("sslray.infer.embed.run_embed", stage("embed", "/out/emb"))
    monkeypatch.setattr("sslray.evaluate.run.run_evaluate", stage("evaluate", {"accuracy": 0.5}))
    return configs


def test_pretrain_loads_the_yaml_then_the_overrides(captured, tmp_path, capsys):
    (tmp_path / "p.yaml").write_text("store: from-yaml\ntrain:\n  steps: 7\n  batch_size: 8\n")
    assert main(["pretrain", "--config", str(tmp_path / "p.yaml"), "train.steps=3", "method.name=simclr"]) == 0
    cfg = captured["pretrain"]
    assert (cfg.store, cfg.train.steps, cfg.train.batch_size, cfg.method_name) == ("from-yaml", 3, 8, "simclr")
    assert json.loads(capsys.readouterr().out) == {"checkpoint": "/runs/ckpt", "mlflow_run_id": "r1",
                                                   "tracking_uri": "sqlite:///m.db", "steps": 5}


def test_embed_flags_are_config_keys_and_overrides_follow(captured, capsys):
    assert main(["embed", "--checkpoint", "/ck", "--store", "/st", "--out", "/dest/emb", "batch_size=16"]) == 0
    cfg = captured["embed"]
    assert (cfg.checkpoint, cfg.store, cfg.batch_size) == ("/ck", "/st", 16)
    assert "/dest/emb" in to_dict(cfg).values()
    assert capsys.readouterr().out.strip() == "wrote embeddings to /out/emb"


def test_embed_from_slides_takes_ingests_tiling_flags_and_needs_exactly_one_input(captured, capsys):
    assert main(["embed", "--checkpoint", "/ck", "--slides", "/slides.csv", "--out", "/emb", "--mpp", "0.5",
                 "--tile-size", "256", "--stride", "128", r"--channel-pattern=-ch(?P<channel>\d+)",
                 "--empty-below", "0.1", "--on-error", "skip"]) == 0
    cfg = captured["embed"]
    assert (cfg.slides, cfg.store, cfg.empty_below, cfg.on_error) == ("/slides.csv", "", 0.1, "skip")
    assert (cfg.tiling.mpp, cfg.tiling.tile_size, cfg.tiling.stride) == (0.5, 256, 128)
    assert cfg.tiling.channel_pattern == r"-ch(?P<channel>\d+)"  # a regex stays text
    with pytest.raises(SystemExit):
        main(["embed", "--checkpoint", "/ck", "--store", "/st", "--slides", "/s", "--out", "/emb"])


def test_evaluate_takes_the_table_and_prints_the_scores(captured, capsys):
    assert main(["evaluate", "--embeddings", "/emb", "c_grid=[0.1,1.0]", "seed=3"]) == 0
    cfg = captured["evaluate"]
    assert (cfg.embeddings, cfg.c_grid, cfg.seed) == ("/emb", [0.1, 1.0], 3)
    assert json.loads(capsys.readouterr().out) == {"accuracy": 0.5}


def test_aggregate_takes_the_table_and_the_spot_table_url(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr("sslray.aggregate.run_aggregate", lambda cfg: seen.append(cfg) or "/spots")
    assert main(["aggregate", "--embeddings", "/emb", "--out", "/spots", "spot_column=well"]) == 0
    assert (seen[0].embeddings, seen[0].spot_column) == ("/emb", "well")
    assert "/spots" in to_dict(seen[0]).values()
    assert capsys.readouterr().out.strip() == "wrote the spot embeddings to /spots"


def test_unknown_config_key_is_a_clear_error(captured, capsys):
    assert main(["pretrain", "store=x", "train.stepz=3"]) == 2
    err = capsys.readouterr().err
    assert "train" in err and "'stepz'" in err and "steps" in err and "pretrain" not in captured


def test_wrong_type_names_the_key(captured, capsys):
    assert main(["evaluate", "--embeddings", "x", "test_fraction=lots"]) == 2
    assert "test_fraction: expected a number" in capsys.readouterr().err and "evaluate" not in captured


def test_a_required_flag_is_named_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "--store", "/st", "--out", "/o"])
    assert exit_info.value.code == 2 and "--checkpoint" in capsys.readouterr().err
