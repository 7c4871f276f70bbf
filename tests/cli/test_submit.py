"""`sslray submit STAGE ...`: submit's own options may come before or after STAGE; the rest, and
everything after ``--``, is the stage's. The submission itself is replaced here."""

import pytest

from sslray.cli import main
from sslray.cli.submit import _split_submit_args


@pytest.fixture
def submitted(monkeypatch):
    configs = []
    monkeypatch.setattr("sslray.submit.submit", lambda cfg: configs.append(cfg) or 0)
    return configs


def test_own_options_after_the_stage_are_taken_out_of_the_stage_args():
    mine, theirs = _split_submit_args(["--address", "http://head:8265", "--config", "c.yaml", "--no-wait",
                                       "train.steps=3"])
    assert (mine.address, mine.no_wait) == ("http://head:8265", True)
    assert theirs == ["--config", "c.yaml", "train.steps=3"]


def test_everything_after_a_lone_double_dash_is_the_stages():
    mine, theirs = _split_submit_args(["--env", "A=1", "--", "--address", "x", "--env", "B=2"])
    assert mine.env == ["A=1"] and mine.address is None
    assert theirs == ["--address", "x", "--env", "B=2"]


def test_options_before_and_after_the_stage_are_combined(submitted):
    assert main(["submit", "--env", "A=1", "--no-wait", "pretrain", "--env", "B=x=y", "--submission-id", "job-7",
                 "--config", "c.yaml"]) == 0
    cfg = submitted[0]
    assert (cfg.stage, cfg.args, cfg.wait, cfg.submission_id) == ("pretrain", ["--config", "c.yaml"], False, "job-7")
    assert cfg.env == {"A": "1", "B": "x=y"} and cfg.address is None


def test_an_option_after_the_stage_wins_over_the_same_option_before(submitted):
    assert main(["submit", "--address", "http://a:8265", "embed", "--address", "http://b:8265"]) == 0
    assert submitted[0].address == "http://b:8265" and submitted[0].wait


def test_an_env_item_without_a_key_is_one_line_and_exit_2(submitted, capsys):
    assert main(["submit", "pretrain", "--env", "=1"]) == 2
    assert "--env '=1': expected KEY=VALUE" in capsys.readouterr().err and submitted == []
