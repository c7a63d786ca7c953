"""The TLS + htpasswd registry of the image tests (`cloud.registry`), and a throttling proxy in front of one.

`registry` (session): one registry on a free port with the session PKI's server certificate, dockerd trusting
its CA (certs.d), the test images pushed (`cloud.registry.TEST_REPOSITORIES`) and untagged locally, so the
engine has them only in the registry. `own_registry` (per test): a registry of the test's own, on its own
port with a copy of that storage, started and stopped by pid, behind a throttling `TcpProxy`, for the tests that
cut or stall the link mid-pull; the session one stays up.
"""
from __future__ import annotations

import shutil
import signal
from dataclasses import dataclass

import pytest

from cloud.registry import Registry
from tests.support.pki import session_pki
from tests.support.ports import free_admin_port
from tests.support.proxy import TcpProxy
from tests.support.services import missing


@dataclass
class TestRegistry:
    __test__ = False
    server: Registry
    host: str  # what images are named with: the registry's own, or its proxy's HOST:PORT

    def image(self, repository: str) -> str:
        return f"{self.host}/{repository}"

    def login(self, password: str | None = None) -> dict:
        """The target's "registries" entry for it."""
        return {self.host: {"username": self.server.user, "password": password or self.server.password}}


def remove_images_of(client, host: str) -> None:
    """Untag every image named in `host` (the layers go with the last name, unless a container still uses them)."""
    for image in client.api.images():
        for tag in image.get("RepoTags") or ():
            if tag.startswith(host + "/"):
                client.images.remove(tag, force=True)


@pytest.fixture(scope="session")
def registry(docker_client, tmp_path_factory):
    if shutil.which("docker-registry") is None:
        missing("Debian's docker-registry")
    pytest.importorskip("bcrypt")
    server = Registry(tmp_path_factory.mktemp("registry"), free_admin_port(), session_pki().dir).configure()
    server.trust()
    server.start()
    try:
        server.push_test_images(docker_client)
        yield TestRegistry(server, server.host)
    finally:
        server.stop()
        server.distrust()
        remove_images_of(docker_client, server.host)


@pytest.fixture
def own_registry(registry, docker_client, tmp_path):
    """A private copy of the session registry behind a throttling proxy (8 MiB/s): .server, .proxy, .host."""
    server = Registry(tmp_path / "own-registry", free_admin_port(), registry.server.pki,
                      password=registry.server.password).configure()
    shutil.rmtree(server.storage)
    shutil.copytree(registry.server.storage, server.storage)
    server.start()
    proxy = TcpProxy(server.port, rate=8 * 1024 * 1024)
    fronted = Registry(server.dir, proxy.port, server.pki)  # only for certs.d: dockerd sees the proxy's port
    fronted.trust()
    try:
        yield OwnRegistry(server, f"127.0.0.1:{proxy.port}", proxy)
    finally:
        proxy.close()
        server.stop(signal.SIGKILL)
        fronted.distrust()
        remove_images_of(docker_client, fronted.host)


@dataclass
class OwnRegistry(TestRegistry):
    proxy: TcpProxy
