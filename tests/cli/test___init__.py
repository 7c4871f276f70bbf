"""The `sslray` command: help for every subcommand, and main's exit codes: an input problem is one
line and exit 2, a bug keeps its traceback."""

import subprocess
import sys

import pytest

from sslray.cli import build_parser, info, main

SUBCOMMANDS = ["ingest", "pretrain", "embed", "evaluate", "aggregate", "quickstart", "methods", "store", "features",
               "profile", "checkpoint", "explain", "submit"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and f"sslray {command}" in out


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "sslray.cli", "methods"], capture_output=True, text=True, check=True)
    assert "dino" in out.stdout
    assert set(SUBCOMMANDS) <= set(build_parser()._subparsers._group_actions[0].choices)


def _methods_does(monkeypatch, effect):
    """`sslray methods` runs ``effect`` instead of listing (main looks the handler up when it builds the parser)."""
    monkeypatch.setattr(info, "run_methods", lambda args: effect())


def test_a_handler_returning_nothing_exits_0(monkeypatch):
    _methods_does(monkeypatch, lambda: None)
    assert main(["methods"]) == 0
    _methods_does(monkeypatch, lambda: 3)
    assert main(["methods"]) == 3


def test_an_input_problem_is_one_line_naming_the_command_and_exit_2(monkeypatch, capsys):
    def fail():
        raise FileNotFoundError("no tile store at /nowhere")

    _methods_does(monkeypatch, fail)
    assert main(["methods"]) == 2
    assert capsys.readouterr().err == "sslray methods: error: no tile store at /nowhere\n"


def test_verbose_keeps_the_traceback_before_the_line(monkeypatch, capsys):
    def fail():
        raise ValueError("train.steps must be >= 1")

    _methods_does(monkeypatch, fail)
    assert main(["-v", "methods"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("sslray methods: error: train.steps must be >= 1\n")


def test_a_bug_is_raised_with_its_traceback(monkeypatch):
    def bug():
        raise RuntimeError("index out of step")

    _methods_does(monkeypatch, bug)
    with pytest.raises(RuntimeError, match="index out of step"):
        main(["methods"])
