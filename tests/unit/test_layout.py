"""The dependency rule, checked on the source: every import of every module, found with ast.

`actors` and `cloud` are the two halves and never import each other; `messages` (what crosses a process
boundary) imports none of the project's other packages; `store` and `conf` import only `messages`. Only run.py,
which is in no package, knows both sides. Imports inside functions count too: a late import is still a
dependency.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("actors", "cloud", "messages", "store", "conf")
PROJECT = {*PACKAGES, "run", "fleetlet_version", "tests", "bench"}  # every top-level name that is ours

# package -> the project's top-level names it must not import
FORBIDDEN = {
    "actors": {"cloud"},
    "cloud": {"actors"},
    "messages": {"actors", "cloud", "store", "conf"},
    "store": PROJECT - {"store", "messages"},
    "conf": PROJECT - {"conf", "messages"},  # actor classes are resolved by name at load, never imported here
}


def imported_tops(source: str) -> set[str]:
    """The top-level names of the absolute imports in ``source`` (relative ones stay in their package)."""
    tops = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            tops.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.partition(".")[0])
    return tops


def violations(package: str, source: str) -> set[str]:
    """The project packages ``source``, a module of ``package``, imports against the rule."""
    return imported_tops(source) & FORBIDDEN.get(package, set())


def project_modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield package, path


@pytest.mark.parametrize(("package", "source"), [
    ("actors", "import cloud.client"),
    ("actors", "def late():\n    from cloud import demo\n"),
    ("cloud", "from actors.runtime.system import AgentSystem"),
    ("messages", "from store import Store"),
    ("messages", "import conf"),
    ("messages", "from actors.runtime.base import FleetletActor"),
    ("store", "from actors.persistence import Persistence"),
    ("store", "import conf"),
    ("store", "from fleetlet_version import __version__"),
    ("conf", "from actors.runtime.base import FleetletActor"),
    ("conf", "from cloud.settings import CloudSettings"),
])
def test_a_wrong_import_is_found(package, source):
    assert violations(package, source), source


@pytest.mark.parametrize(("package", "source"), [
    ("actors", "import messages\nfrom store import Store\nimport conf\nfrom fleetlet_version import __version__"),
    ("cloud", "from messages.protocol.patches import apply_patch\nfrom store import Store"),
    ("messages", "import msgpack\nfrom messages.codec import message\nfrom . import codec"),
    ("store", "import peewee\nfrom messages.protocol.target_state import TargetState\nfrom .errors import StoreError"),
    ("actors", "import cloudpickle"),  # a name that merely starts like a package of ours
])
def test_allowed_imports_pass(package, source):
    assert violations(package, source) == set()


def test_every_module_follows_the_dependency_rule():
    found = {f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}"
             for package, path in project_modules() if (bad := violations(package, path.read_text()))}
    assert not found, "\n".join(sorted(found))


def test_every_package_is_walked():
    walked = {package for package, _ in project_modules()}
    assert walked == set(PACKAGES)
