"""``sslray.methods``: importing the package registers every method module in it; configs are validated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import sslray.methods as methods
from sslray.config import ConfigError
from sslray.methods import METHODS, build_method, method_config

DECORATED = re.compile(r"^@register_method\(\"(\w+)\"\)", re.M)


def test_every_decorated_method_module_is_registered_without_being_listed():
    """A new method is its own module: the package imports every module, so nothing lists it."""
    declared = {name for path in Path(methods.__file__).parent.glob("*.py")
                for name in DECORATED.findall(path.read_text())}
    assert declared and declared == set(METHODS.names())
    assert "import dino" not in Path(methods.__file__).read_text()


def test_method_config_names_the_bad_key():
    with pytest.raises(ConfigError, match=r"unknown config key method\.'out_dimm'"):
        method_config("dino", {"out_dimm": 3})
    with pytest.raises(ConfigError, match="method.name"):
        method_config("no_such_method", {})


def test_build_method_accepts_a_validated_config():
    from sslray.methods.base import Schedule
    from sslray.models.backbones import BackboneConfig, create_backbone

    backbone = create_backbone(BackboneConfig(name="resnet18", weights=None), 3)
    cfg = method_config("simclr", {})
    method = build_method("simclr", cfg, backbone, Schedule(total_steps=10))
    assert method.name == "simclr" and method.cfg is cfg
