"""Shared fixtures: process-leak detection, free ports, and the real engine and broker.

The test session is a child subreaper, so an actor orphaned by a test reparents to it and is found:
a test that leaves a process behind fails, and the process is ended.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

from actors.runtime.processes import become_subreaper, children_of, reap_children
from actors.runtime.system import AgentSystem
from cloud.loopback import Mosquitto, free_port  # noqa: F401  (free_port: for the tests)

IN_CI = os.environ.get("CI", "").lower() == "true"


def missing(what: str) -> None:
    """A needed real component is absent: fail loudly in CI, skip on a developer's machine."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is not available")
    pytest.skip(f"{what} is not available")


def pytest_sessionstart(session):
    become_subreaper()


def _descendants() -> set[int]:
    found, frontier = set(), [os.getpid()]
    while frontier:
        for child in children_of(frontier.pop()):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


@pytest.fixture(autouse=True)
def no_leaked_processes(request):
    before = _descendants()
    yield
    deadline = time.monotonic() + 5
    leaked = _descendants() - before
    while leaked and time.monotonic() < deadline:
        reap_children()
        time.sleep(0.05)
        leaked = _descendants() - before
    if leaked:
        for pid in leaked:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        reap_children()
        pytest.fail(f"test left processes running: {sorted(leaked)}")


@pytest.fixture
def start_agent():
    """Start an actor system from a configuration; every one started is stopped at teardown."""
    started = []

    def start(config: dict, wait_running: bool = False) -> AgentSystem:
        system = AgentSystem(config)
        started.append(system)
        system.start()
        if wait_running:
            wait_for(lambda: all(c.state == "running" for c in system.status().children),
                     what="every actor running")
        return system

    yield start
    for system in started:
        system.stop()


@pytest.fixture
def port():
    return free_port()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# -- real broker -------------------------------------------------------------------------------------
@pytest.fixture
def broker(tmp_path):
    """A fresh, real Mosquitto for one test."""
    if not (shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto")):
        missing("the mosquitto broker")
    server = Mosquitto(tmp_path).start()
    yield server
    server.stop()


# -- real engine -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def docker_client():
    try:
        import docker
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no engine here
        missing(f"a Docker engine ({exc})")
    yield client
    client.close()


@pytest.fixture(scope="session")
def test_images(docker_client):
    """fleetlet-test/busybox:1 and :2, built locally from the static busybox (no registry is reachable)."""
    build = pathlib.Path(__file__).parent / "images" / "build.sh"
    subprocess.run(["sh", str(build)], check=True, capture_output=True, timeout=120)
    return ("fleetlet-test/busybox:1", "fleetlet-test/busybox:2")
