"""SSL methods, one module each, pure torch (no Ray).

Importing this package imports every module in it, and so registers every method
(``@register_method``): a new method is its own module, with nothing to add here. Look them
up with ``build_method``.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from torch import nn

from sslray.config import ConfigError, from_dict
from sslray.methods.base import Schedule, SSLMethod, StepOutput
from sslray.methods.registry import METHODS, register_method

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

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
