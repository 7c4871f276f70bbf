"""Tests mirror the source tree: every module of ``sslray/`` with logic has ``tests/<pkg>/test_<module>.py``.

A module is found by its path (``sslray/data/tiling.py`` -> ``tests/data/test_tiling.py``), so a
new engineer finds a module's tests without searching, and a module without any shows up here
instead of in review. Tests of a concern that spans modules (``tests/hardening/``,
``tests/cluster/``, ``tests/test_pipeline.py``) come on top of the mirrored ones; see
docs/architecture.md ("The rules").
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Modules with no logic to test: package markers, pure re-exports, entry points and constants.
# Each must stay free of functions and classes (checked below); one that gains some needs a test.
NO_LOGIC = {
    "sslray/__init__.py": "the version and the package docstring",
    "sslray/aggregate/__init__.py": "re-exports and the AGGREGATORS listing",
    "sslray/artifacts/__init__.py": "re-exports of the kind checks",
    "sslray/cli/__main__.py": "python -m sslray.cli entry point",
    "sslray/cli/epilogs.py": "help texts",
    "sslray/data/__init__.py": "package docstring",
    "sslray/evaluate/__init__.py": "package marker",
    "sslray/explain/__init__.py": "package docstring",
    "sslray/features/__init__.py": "re-exports",
    "sslray/infer/__init__.py": "package marker",
    "sslray/models/__init__.py": "package marker",
    "sslray/profile/__init__.py": "package docstring",
    "sslray/quickstart/__init__.py": "re-exports",
    "sslray/train/__init__.py": "package marker",
    "sslray/train/checkpoint.py": "re-exports of sslray.artifacts.checkpoint for old imports",
    "sslray/data/store.py": "re-exports of the tile store format in sslray.artifacts for old imports",
    "sslray/data/selection.py": "re-export of sslray.artifacts.selection for old imports",
}

# TEMPORARY (issue 12): modules being rewritten while this list was made, which have no mirrored
# test module yet; the value says where they are tested today. This is debt: give each a tests/<pkg>/test_<module>.py and delete its line
# (the last test below fails once a listed module has one, or no longer exists).
PENDING = {
}


def source_modules() -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "sslray").rglob("*.py"))


def mirrored_test(module: str) -> Path:
    """``sslray/<pkg>/<name>.py`` -> ``tests/<pkg>/test_<name>.py``."""
    path = Path(module).relative_to("sslray")
    return ROOT / "tests" / path.parent / f"test_{path.stem}.py"


def has_logic(module: str) -> bool:
    tree = ast.parse((ROOT / module).read_text())
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for node in ast.walk(tree))


def test_every_module_with_logic_has_a_mirrored_test_module():
    missing = [m for m in source_modules()
               if not mirrored_test(m).exists() and m not in NO_LOGIC and m not in PENDING]
    assert not missing, ("modules without a mirrored test module (add tests/<pkg>/test_<module>.py; "
                         f"only a module without logic goes in NO_LOGIC): {missing}")


def test_modules_allowed_no_test_hold_no_logic():
    gone = [m for m in NO_LOGIC if not (ROOT / m).exists()]
    assert not gone, f"these modules no longer exist; delete them from NO_LOGIC: {gone}"
    gained = [m for m in NO_LOGIC if has_logic(m)]
    assert not gained, f"these modules now define functions or classes; give them a test module: {gained}"


def test_the_pending_list_is_only_debt_that_is_still_owed():
    paid = [m for m in PENDING if not (ROOT / m).exists() or mirrored_test(m).exists()]
    assert not paid, f"these modules have a mirrored test now (or are gone); delete them from PENDING: {paid}"
