"""A private Docker engine for tests that take the engine away: its own data and exec roots, socket and pid file,
in a network namespace of its own (`unshare --net`), started and stopped by pid. The machine's shared dockerd,
which the other tests (and other people's) use, is never touched, nor are the host's interfaces.

Why a namespace: a second dockerd in the host's namespace deleted the shared engine's bridge, docker0 (with
``--bridge=none``, and also when restarted on its data root with a bridge of its own), and every container started
on the shared engine's default network then failed ("could not find bridge docker0"); the bridges of its networks
also outlived it, each holding an address range of the host's. In its own namespace, its bridges, addresses and
containers' networks exist only there and go with it; the agent reaches it through its unix socket.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import tempfile

import docker
import pytest

from tests.support.polling import wait_for
from tests.support.services import missing

BUILD = pathlib.Path(__file__).parent.parent / "images" / "build.sh"


class PrivateDockerd:
    def __init__(self) -> None:
        # A short path: the engine's and containerd's unix sockets live under it (108 bytes at most).
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="fdk-", dir="/tmp"))
        self.url = f"unix://{self.root / 'docker.sock'}"
        self.proc: subprocess.Popen | None = None
        self._client: docker.DockerClient | None = None

    def start(self, timeout: float = 60.0) -> "PrivateDockerd":
        """Start the engine and wait until it answers (again, after a stop: same data root, same containers)."""
        with (self.root / "dockerd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--net", "dockerd", f"--data-root={self.root}/data", f"--exec-root={self.root}/exec",
                 f"-H={self.url}", f"--pidfile={self.root}/docker.pid", "--iptables=false", "--ip-forward=false",
                 "--ip-masq=false"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.pings, timeout=timeout, interval=0.05, what="the private dockerd to answer")
        return self

    def pings(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the private dockerd exited: {(self.root / 'dockerd.log').read_text()[-2000:]}")
        try:
            return bool(self.client().ping())
        except Exception:  # noqa: BLE001 - not up (yet)
            return False

    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.url, timeout=20)
        return self._client

    def build_test_images(self) -> None:
        """fleetlet-test/busybox:1 and :2, built into this engine (no registry, no other engine needed)."""
        subprocess.run(["sh", str(BUILD)], check=True, capture_output=True, timeout=300,
                       env={**os.environ, "DOCKER_HOST": self.url})

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM the engine (by pid) and wait for it; it stops its containerd and containers' shims."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def remove(self) -> None:
        """Remove its containers and networks, stop it, and remove every trace of it (mounts, files)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                for container in self.client().containers.list(all=True):
                    container.remove(force=True)
                for network in self.client().networks.list():
                    if network.name not in ("bridge", "host", "none"):
                        network.remove()
            except Exception:  # noqa: BLE001 - cleanup goes on whatever the engine says
                pass
        self.stop()
        subprocess.run(["umount", "-R", "-l", str(self.root)], capture_output=True)  # whatever it left mounted
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
