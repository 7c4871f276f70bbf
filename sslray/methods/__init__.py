"""SSL methods, one module each, pure torch (no Ray).

Importing this package registers every method; look them up with ``build_method``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from sslray.config import ConfigError, from_dict
from sslray.methods import dino, ibot, mae, simclr, spot_dino, vicregl  # noqa: F401  (registers)
from sslray.methods.base import Schedule, SSLMethod, StepOutput
from sslray.methods.registry import METHODS, register_method

__all__ = ["METHODS", "Schedule", "SSLMethod", "StepOutput", "build_method", "method_config", "register_method"]


def method_config(name: str, params: dict[str, Any]) -> Any:
    """Validate ``params`` against the method's own config dataclass."""
    try:
        cls = METHODS.get(name)
    except KeyError as err:
        raise ConfigError(f"method.name: {err.args[0]}") from None
    return from_dict(cls.Config, params, prefix="method")


def build_method(name: str, params: dict[str, Any] | Any, backbone: nn.Module, schedule: Schedule) -> SSLMethod:
    cls = METHODS.get(name)
    cfg = params if isinstance(params, cls.Config) else method_config(name, params)
    return cls(backbone, cfg, schedule)
