"""The registry of SSL methods, filled by importing ``sslray.methods``."""

from __future__ import annotations

from sslray.registry import Registry

METHODS: Registry[type] = Registry("SSL method")


def register_method(name: str):
    def add(cls: type) -> type:
        cls.name = name
        return METHODS.register(name)(cls)

    return add
