"""Shared fixtures: process-leak detection, free ports, and the real engine and broker.

The test session is a child subreaper, so an actor orphaned by a test reparents to it and is found:
a test that leaves a process behind fails, and the process is ended.

Fixtures kept in tests/support/ are declared in ``pytest_plugins`` below, so a test names them as
parameters and never imports them (an import of a fixture looks unused and invites a "cleanup").
Helpers (``wait_for``, ``missing``) are plain imports from tests/support/.

Layout: tests/unit needs no service and runs in seconds; tests/integration uses a real engine, broker,
PostgreSQL or actor system; tests/e2e runs the agent, the cloud and run.py as operators do.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import time

import pytest

from actors.runtime.processes import become_subreaper, reap_children
from actors.runtime.system import AgentSystem
from cloud.loopback import Mosquitto
from tests.support.polling import wait_for
from tests.support.ports import free_admin_port
from tests.support.processes import descendants, kill_pids
from tests.support.services import missing

pytest_plugins = ["tests.support.pki", "tests.support.postgres", "tests.support.cloud",
                  "tests.support.private_dockerd", "tests.support.registry"]


def pytest_sessionstart(session):
    become_subreaper()


def _descendants() -> set[int]:
    return descendants(os.getpid())


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
        kill_pids(leaked)
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
    """The test agent's admin port (see tests/support/ports.py for why not any free port)."""
    return free_admin_port()


# -- real broker -------------------------------------------------------------------------------------
def _mosquitto(tmp_path, **options):
    if not (shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto")):
        missing("the mosquitto broker")
    return Mosquitto(tmp_path, **options).start()


@pytest.fixture
def broker(tmp_path, pki):
    """A fresh, real Mosquitto for one test, as deployed: TLS, client certificates, the ACL (the session PKI)."""
    server = _mosquitto(tmp_path, pki_dir=pki.dir)
    yield server
    server.stop()


@pytest.fixture
def plain_broker(tmp_path):
    """A plaintext, anonymous Mosquitto on loopback, for the tests of MQTT itself (flow control, sessions)."""
    server = _mosquitto(tmp_path, tls=False)
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
