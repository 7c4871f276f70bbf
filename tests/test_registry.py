"""The name registry: a taken name is refused, an unknown one is named with the known ones."""

import pytest

from sslray.registry import Registry


def test_registered_objects_are_found_by_name_and_listed_sorted():
    things: Registry[type] = Registry("widget")
    things.register("zeta")(int)
    assert things.register("alpha")(str) is str  # usable as a decorator
    assert things.get("zeta") is int and "alpha" in things and "beta" not in things
    assert things.names() == list(things) == ["alpha", "zeta"] and len(things) == 2


def test_a_taken_name_is_refused_and_an_unknown_one_names_the_known():
    things: Registry[type] = Registry("widget")
    things.register("dino")(int)
    with pytest.raises(KeyError, match="widget 'dino' is already registered"):
        things.register("dino")(str)
    assert things.get("dino") is int  # the first registration stands
    with pytest.raises(KeyError, match="unknown widget 'dnio'; registered: dino"):
        things.get("dnio")
    with pytest.raises(KeyError, match="registered: none"):
        Registry("protocol").get("x")
