"""Packaging facts users rely on: every package folder ships, entry points name real plugins."""

import tomllib
from pathlib import Path

from helpers import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
MAPPING = PYPROJECT["tool"]["setuptools"]["package-dir"]


def test_every_package_folder_is_listed():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = set()
    for import_name, folder in MAPPING.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([import_name, *rel.parts]))
    assert found - listed == set(), "add these to [tool.setuptools] packages"


def test_builtin_entry_points_are_valid_plugin_names_and_modules():
    from ufarsap_engine.schemas import PLUGIN_NAME_RE

    eps = PYPROJECT["project"]["entry-points"]["ufarsap_engine"]
    assert len(eps) == 11
    for name, target in eps.items():
        assert PLUGIN_NAME_RE.match(name), name
        module = target.split(":")[0]
        top, *rest = module.split(".")
        path = REPO / MAPPING[top] / Path(*rest)
        assert path.with_suffix(".py").exists() or (path / "__init__.py").exists(), target
