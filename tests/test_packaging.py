"""Ready to publish: license metadata, classifiers, a README that renders on an index page, and
an sdist that carries its own tests. ``.ci/run`` builds both distributions and runs
``twine check --strict`` and part of the suite from the unpacked sdist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
HOME = PROJECT["urls"]["Homepage"]

#: The (Python, Django) pairs CI runs; the classifiers must promise no less and no more.
SUPPORTED_PYTHON = ("3.11", "3.12", "3.13")
SUPPORTED_DJANGO = ("5.2", "6.0", "6.1")


def test_license_is_spdx_with_its_file() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert PROJECT["license"] == "MIT"  # a string: the table form is deprecated
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "raif_batches contributors" in text
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"])
    assert "setuptools>=77" in pyproject["build-system"]["requires"]  # PEP 639 metadata


def test_classifiers_name_every_supported_version_and_are_known() -> None:
    classifiers = set(PROJECT["classifiers"])
    assert {f"Programming Language :: Python :: {v}" for v in SUPPORTED_PYTHON} == {
        c for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert {f"Framework :: Django :: {v}" for v in SUPPORTED_DJANGO} == {
        c for c in classifiers if re.fullmatch(r"Framework :: Django :: \d+\.\d+", c)
    }
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    assert PROJECT["requires-python"] == f">={SUPPORTED_PYTHON[0]}"
    trove = pytest.importorskip("trove_classifiers")
    assert classifiers <= set(trove.classifiers), classifiers - set(trove.classifiers)


def test_readme_images_are_absolute_links_to_files_of_the_project() -> None:
    readme = (ROOT / "README.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)", readme) + re.findall(
        r"<img[^>]+src=\"([^\"]+)\"", readme
    )
    assert images
    prefix = f"{HOME}/raw/main/"
    for url in images:
        assert url.startswith(prefix), url
        assert (ROOT / url.removeprefix(prefix)).is_file(), url


def test_changelog_has_an_unreleased_section_and_is_linked() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert PROJECT["urls"]["Changelog"].endswith("/CHANGELOG.md")


def test_the_sdist_carries_what_its_tests_need() -> None:
    manifest = (ROOT / "MANIFEST.in").read_text().split()
    for needed in ("tests", "example_project", "manage.py", "LICENSE", "CHANGELOG.md"):
        assert needed in manifest, needed
    # The wheel stays the app alone.
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert find["packages"]["find"]["include"] == ["raif_batches*"]


def test_the_optional_extras_exist() -> None:
    extras = PROJECT["optional-dependencies"]
    assert any(r.startswith("mysqlclient") for r in extras["mysql"])
    assert any(r.startswith("psycopg") for r in extras["postgres"])
    assert any(r.startswith("hypothesis") for r in extras["test"])
    assert {"build>=1.2", "twine>=6.1"} <= set(extras["dev"])
