"""A private Docker engine for tests that take the engine away: its own data and exec roots, its own socket, its
own bridge and no iptables, started and stopped by pid. The machine's shared dockerd, which the other tests (and
other people's) use, is never touched.

Not ``--bridge=none``: a dockerd started so deletes the interface named docker0, the shared engine's bridge, and
every container started on the shared engine's default network then fails ("could not find bridge docker0").
"""
from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import tempfile

import pytest

from tests.support.polling import wait_for
from tests.support.services import missing

BUILD = pathlib.Path(__file__).parent.parent / "images" / "build.sh"


class PrivateDockerd:
    def __init__(self) -> None:
        # A short path: the engine's and containerd's unix sockets live under it (108 bytes at most).
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="fdk-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.bridge = f"fdk{os.urandom(4).hex()}"  # interface names have at most 15 characters
        self.proc: subprocess.Popen | None = None

    def start(self) -> "PrivateDockerd":
        """Start the engine and wait until it answers (again, after a stop: same data root, same containers)."""
        if not pathlib.Path("/sys/class/net", self.bridge).exists():
            subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True, capture_output=True)
        log = open(self.root / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            ["dockerd", f"--data-root={self.root}/data", f"--exec-root={self.root}/exec", f"-H={self.host}",
             f"--pidfile={self.root}/docker.pid", "--bridge", self.bridge, "--iptables=false", "--ip-forward=false",
             "--ip-masq=false"],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_for(self.answers, timeout=60, interval=0.2, what="the private dockerd to answer")
        return self

    def answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the private dockerd exited: {(self.root / 'dockerd.log').read_text()[-2000:]}")
        return subprocess.run(["docker", "-H", self.host, "version"], capture_output=True, timeout=30).returncode == 0

    def stop(self) -> None:
        """SIGTERM the engine (by pid) and wait for it; it stops its containerd and containers' shims."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def build_test_images(self) -> None:
        """fleetlet-test/busybox:1 and :2, built into this engine (no registry, no other engine needed)."""
        subprocess.run(["sh", str(BUILD)], check=True, capture_output=True, timeout=300,
                       env={**os.environ, "DOCKER_HOST": self.host})

    def client(self):
        import docker
        return docker.DockerClient(base_url=self.host, timeout=30)

    def remove(self) -> None:
        self.stop()
        subprocess.run(["umount", "-R", str(self.root / "exec")], capture_output=True)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_dockerd():
    """A private engine with the test images; stopped and removed at teardown, whatever the test did to it."""
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        missing("root and dockerd, to run a private Docker engine")
    engine = PrivateDockerd()
    try:
        engine.start()
        engine.build_test_images()
        yield engine
    finally:
        engine.remove()
