"""The `sslray` command: help for every subcommand, method listing, errors that name the key."""

import subprocess
import sys

import pytest

from sslray.cli import build_parser, main

SUBCOMMANDS = ["ingest", "pretrain", "embed", "evaluate", "aggregate", "quickstart", "methods", "store"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and f"sslray {command}" in out


def test_methods_lists_one_line_per_method(capsys):
    from sslray.aggregate import AGGREGATORS
    from sslray.methods import METHODS

    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == [*METHODS.names(), *AGGREGATORS]


def test_unknown_config_key_is_a_clear_error(capsys, tmp_path):
    assert main(["pretrain", "store=x", "train.stepz=3"]) == 2
    err = capsys.readouterr().err
    assert "train" in err and "'stepz'" in err and "steps" in err


def test_wrong_type_names_the_key(capsys):
    assert main(["evaluate", "--embeddings", "x", "test_fraction=lots"]) == 2
    assert "test_fraction: expected a number" in capsys.readouterr().err


def test_ingest_error_names_the_file(capsys, tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "bad.png").write_bytes(b"nope")
    assert main(["ingest", str(tmp_path / "src"), str(tmp_path / "dest"), "--tile-size", "16", "--workers", "0"]) == 2
    assert "bad.png" in capsys.readouterr().err
    assert not (tmp_path / "dest").exists()


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "sslray.cli", "methods"], capture_output=True, text=True, check=True)
    assert "dino" in out.stdout
    assert set(SUBCOMMANDS) <= set(build_parser()._subparsers._group_actions[0].choices)


def test_methods_lists_all_eight(capsys):
    assert main(["methods"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert listed == {"dino", "ibot", "mae", "simclr", "vicregl", "mpcs", "channel_agnostic_dino", "spot_dino"}
