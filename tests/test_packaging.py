"""What ships with the package: the licence, one version, type information, a changelog."""

import importlib.metadata
from pathlib import Path

import pytest

import minicnn

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")

ROOT = Path(__file__).resolve().parents[1]


def test_the_mit_licence_ships_with_the_code():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
    assert "License :: OSI Approved :: MIT License" in project["classifiers"]


def test_the_version_has_one_source():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "minicnn.__version__"}
    assert importlib.metadata.version("minicnn") == minicnn.__version__
    assert f"[{minicnn.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_the_package_is_typed():
    assert (Path(minicnn.__file__).parent / "py.typed").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]
    assert "py.typed" in package_data["minicnn"]
