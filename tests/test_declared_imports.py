"""Every third-party module the code imports is declared in pyproject.toml.

An undeclared import works on the machine where it happens to be installed and fails on a fresh
one; this test parses every import (ast) and maps it to its distribution.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCANNED = ["ufarsap_engine", "plugins", "registry", "scripts", "benchmarks", "tests"]
FIRST_PARTY = {"ufarsap_engine", "ufarsap_plugins", "ufarsap_registry"}
# Folders whose own modules are imported by plain name (scripts and tests put them on sys.path).
LOCAL_ROOTS = ["scripts", "benchmarks", "tests"]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules() -> dict[str, set[str]]:
    """Top-level module -> files importing it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for root in SCANNED:
        for path in (REPO / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


def local_modules() -> set[str]:
    names = set()
    for root in LOCAL_ROOTS:
        for path in (REPO / root).rglob("*"):
            if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").exists()):
                names.add(path.stem)
    return names


def declared_distributions() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {normalize(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r.strip()).group()) for r in reqs}


def test_every_third_party_import_is_declared():
    to_dists = importlib.metadata.packages_distributions()
    declared = declared_distributions()
    skip = set(sys.stdlib_module_names) | FIRST_PARTY | local_modules()
    missing = {}
    for module, files in sorted(imported_modules().items()):
        if module in skip:
            continue
        # A module not installed here is looked up under its own name (e.g. an optional extra).
        dists = {normalize(d) for d in to_dists.get(module, [module])}
        if not dists & declared:
            missing[module] = (sorted(dists), sorted(files)[:3])
    assert not missing, f"imported but not declared in pyproject.toml (module: distributions, files): {missing}"


def test_the_check_sees_an_undeclared_import():
    assert "click" in imported_modules()  # the CLI's own imports are scanned
    assert {"sqlalchemy", "torch", "pytest"} <= declared_distributions()
    assert "helpers" in local_modules() and "trainer_helpers" in local_modules()
