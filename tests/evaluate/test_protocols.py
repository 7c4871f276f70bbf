"""Evaluation protocols are found by name; ``sslray evaluate --protocol NAME`` runs the one asked for."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest

from sslray.cli import main
from sslray.evaluate.protocols import PROTOCOLS, get_protocol, load_protocols, register_protocol
from sslray.evaluate.run import EvaluateConfig


def test_every_protocol_module_under_evaluate_is_found_without_being_listed():
    assert "linear_probe" in load_protocols()
    assert get_protocol("linear_probe").Config is EvaluateConfig


@pytest.fixture
def scratch_protocol(monkeypatch):
    """A protocol registered for one test only: its own module is all a new protocol needs."""
    monkeypatch.setattr(PROTOCOLS, "_entries", dict(PROTOCOLS._entries))
    calls = []

    @register_protocol("scratch")
    class Scratch:
        @dataclass
        class Config:
            embeddings: str = ""
            k: int = 1

            def __post_init__(self) -> None:
                if self.k < 1:
                    raise ValueError(f"k must be >= 1, got {self.k}")

        @staticmethod
        def run(cfg) -> dict[str, float]:
            calls.append(cfg)
            return {"accuracy": 0.5, "k": float(cfg.k)}

    return calls


def test_the_cli_loads_the_protocols_own_config_and_runs_it(scratch_protocol, capsys):
    assert main(["evaluate", "--protocol", "scratch", "--embeddings", "/t/emb", "k=3"]) == 0
    assert json.loads(capsys.readouterr().out) == {"accuracy": 0.5, "k": 3.0}
    assert scratch_protocol[0].embeddings == "/t/emb"
    assert main(["evaluate", "--protocol", "scratch", "--embeddings", "/t/emb", "k=0"]) == 2
    assert "k must be >= 1" in capsys.readouterr().err


def test_an_unknown_protocol_is_one_line_listing_the_registered_ones(capsys):
    assert main(["evaluate", "--protocol", "milk", "--embeddings", "/t/emb"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown evaluation protocol 'milk'" in err and "linear_probe" in err
    assert "mil" in err and "survival" in err


def test_linear_is_the_short_name_of_the_linear_probe():
    assert get_protocol("linear") is get_protocol("linear_probe")


def test_a_taken_name_is_refused(scratch_protocol):
    with pytest.raises(KeyError, match="already registered"):
        register_protocol("scratch")(type("Other", (), {}))


def test_importing_the_registry_imports_no_protocol():
    """Evaluation heads must stay importable without the platform: the registry pulls nothing in."""
    code = "import sys, sslray.evaluate.protocols; assert 'sslray.evaluate.run' not in sys.modules; " \
           "assert 'ray' not in sys.modules and 'mlflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
