"""Packaging: one version, one metadata file, and a `fleetlet` command that is run.py."""
from __future__ import annotations

import configparser
import pathlib
import tomllib

import pytest

import run
from fleetlet_version import __version__

ROOT = pathlib.Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_fleetlet_command_is_run_py_and_the_version_is_written_once():
    project = PYPROJECT["project"]
    assert project["scripts"] == {"fleetlet": "run:main"}
    assert "version" in project["dynamic"] and "version" not in project
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fleetlet_version.__version__"}
    assert set(PYPROJECT["tool"]["setuptools"]["py-modules"]) == {"run", "fleetlet_version"}


def test_every_package_and_the_default_configuration_are_shipped():
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["actors*", "messages*", "store*", "cloud*", "conf*"]
    assert PYPROJECT["tool"]["setuptools"]["package-data"] == {"conf": ["*.toml"]}


def test_the_test_extras_install_the_linters_ci_runs():
    test_extras = {req.split(">")[0].split("=")[0] for req in PYPROJECT["project"]["optional-dependencies"]["test"]}
    assert {"pytest", "hypothesis", "ruff", "mypy"} <= test_extras


def test_setup_cfg_holds_only_pytest_configuration():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    assert parser.sections() == ["tool:pytest"]
    assert parser["tool:pytest"]["testpaths"] == "tests"


@pytest.mark.parametrize("argv", [["--version"], ["--version", "status"]])
def test_version_is_printed_without_reading_any_configuration(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        run.main(argv)
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"fleetlet {__version__}\n"


def test_no_committed_file_holds_a_merge_conflict_marker():
    # Linters read Python only: a marker left in README.md or a TOML file would pass them silently.
    import subprocess
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    markers = ("<" * 7 + " ", "=" * 7 + "\n", ">" * 7 + " ")
    found = []
    for name in tracked:
        path = ROOT / name
        if path.suffix in {".py", ".md", ".toml", ".cfg", ".sh", ".yml", ".yaml", ".json", ".txt"} or name == ".ci/run":
            text = path.read_text(errors="replace") if path.is_file() else ""
            found += [name for line in text.splitlines(keepends=True) if line.startswith(markers)]
    assert not found, f"merge conflict markers in {sorted(set(found))}"
