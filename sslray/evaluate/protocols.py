"""Evaluation protocols by name: ``sslray evaluate --protocol NAME``.

A protocol is a class with a ``Config`` dataclass (validated in ``__post_init__``; its
``embeddings`` key is the table it reads) and a static ``run(cfg) -> dict[str, float]`` that
scores the table and tracks the run (``sslray.stage.tracked_run``). It registers itself with
``@register_protocol("NAME")`` in its own module under ``sslray/evaluate/``, and
``load_protocols`` imports every module there, so a new protocol touches only its module, its
config (``configs/evaluate/NAME.yaml``) and its test (docs/architecture.md, "A new evaluation
protocol"). Importing this module imports no protocol, so the evaluation heads stay importable
without the platform.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Protocol

from sslray.config import ConfigError
from sslray.registry import Registry

PROTOCOLS: Registry[type] = Registry("evaluation protocol")
DEFAULT = "linear_probe"
ALIASES = {"linear": "linear_probe"}  # the short names the CLI's help offers


class EvaluationProtocol(Protocol):
    name: str
    Config: type

    @staticmethod
    def run(cfg: Any) -> dict[str, float]: ...


def register_protocol(name: str):
    def add(cls: type) -> type:
        cls.name = name
        return PROTOCOLS.register(name)(cls)

    return add


def load_protocols() -> Registry[type]:
    """Every protocol under ``sslray/evaluate/``, registered by importing its module."""
    import sslray.evaluate as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    return PROTOCOLS


def get_protocol(name: str) -> EvaluationProtocol:
    try:
        return load_protocols().get(ALIASES.get(name, name))
    except KeyError as err:
        raise ConfigError(f"--protocol: {err.args[0]}") from None
