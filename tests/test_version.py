"""One version: the distribution's (pyproject.toml), the package's ``__version__``, the changelog's newest release."""

import os
import re

import nnunet_mvext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def test_the_package_pyproject_and_changelog_name_the_same_version():
    project = _read("pyproject.toml").split("[project]", 1)[1].split("\n[", 1)[0]
    assert re.findall(r'^version = "([^"]+)"$', project, flags=re.M) == [nnunet_mvext.__version__]
    newest = re.findall(r"^## (.+)$", _read("CHANGELOG.md"), flags=re.M)[0]
    assert re.search(rf"\b{re.escape(nnunet_mvext.__version__)}\b", newest), newest
