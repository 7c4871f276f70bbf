"""`sslray quickstart`: its arguments become the QuickstartConfig (the pipeline itself is replaced here)."""

import json

import pytest

from sslray.cli import main
from sslray.quickstart import QuickstartConfig


class _Summary:
    tracking_uri = "sqlite:///q/mlflow.db"

    def to_json(self) -> dict:
        return {"method": "mae"}

    def headline(self) -> str:
        return "ssl beats random init"


@pytest.fixture
def quickstart_configs(monkeypatch):
    configs = []
    monkeypatch.setattr("sslray.quickstart.run_quickstart", lambda cfg: configs.append(cfg) or _Summary())
    return configs


def test_no_argument_is_the_default_config(quickstart_configs, capsys):
    assert main(["quickstart"]) == 0
    assert quickstart_configs == [QuickstartConfig()]
    out = capsys.readouterr().out
    assert json.loads(out.split("\n\n")[0]) == {"method": "mae"}
    assert "ssl beats random init" in out and "mlflow ui --backend-store-uri sqlite:///q/mlflow.db" in out


def test_every_flag_and_override_reaches_the_config(quickstart_configs):
    assert main(["quickstart", "--data", "/imgs", "--labels", "/l.csv", "--method", "mae", "--out", "/q",
                 "--tile-size", "96", "--steps", "12", "train.batch_size=8", "optim.lr=0.01"]) == 0
    assert quickstart_configs == [QuickstartConfig(data="/imgs", labels="/l.csv", method="mae", run_dir="/q", tile_size=96,
                                                   steps=12, overrides=["train.batch_size=8", "optim.lr=0.01"])]


def test_a_step_count_that_is_not_a_number_is_refused_by_argparse(quickstart_configs, capsys):
    with pytest.raises(SystemExit):
        main(["quickstart", "--steps", "many"])
    assert "--steps" in capsys.readouterr().err and quickstart_configs == []
