"""One development PKI for the whole test session (cloud.pki, exactly what an operator runs), and the
identities tests connect with.

Made once, in a temporary directory, on first use: a CA, the server certificate, the cloud's identity
(``fleetlet-cloud``), a second cloud identity and a few probe identities (service role: they may touch every
thing, as a test's observer must), all issued before any broker starts, because a broker reads its ACL from
the certificates present when it starts. Device certificates are issued on demand (CN = the thing name);
the ACL's ``%u`` patterns cover a device whose uuid is its thing name whenever its certificate was made.
EC P-256 keys make all of it take milliseconds.
"""
from __future__ import annotations

import atexit
import itertools
import pathlib
import shutil
import tempfile
import threading

import pytest

from cloud import pki as pki_tools
from messages.transport.tls import TlsSettings

CLOUD, CLOUD_2 = "cloud", "cloud-2"  # file stems of the two cloud identities
PROBES = tuple(f"probe-{n}" for n in range(1, 7))  # service identities for test observers, used in turn


class TestPki:
    __test__ = False  # not a test class, whatever its name

    def __init__(self, directory: pathlib.Path):
        self.dir = directory
        self._lock = threading.Lock()
        self._probes = itertools.cycle(PROBES)
        pki_tools.init(directory)
        pki_tools.issue_service(directory, CLOUD_2, "fleetlet-cloud-2")
        for name in PROBES:
            pki_tools.issue_service(directory, name, name)

    @property
    def ca(self) -> str:
        return str(self.dir / "ca.crt")

    def files(self, stem: str) -> tuple[str, str]:
        return str(self.dir / f"{stem}.crt"), str(self.dir / f"{stem}.key")

    def device(self, uuid: str, thing: str | None = None) -> tuple[str, str]:
        """The device's certificate and key, issued on first use."""
        cert, key = pki_tools.device_paths(self.dir, uuid)
        with self._lock:
            if not cert.exists():
                pki_tools.issue_device(self.dir, uuid, thing)
        return str(cert), str(key)

    def next_probe(self) -> str:
        with self._lock:
            return next(self._probes)

    def tls(self, stem: str) -> TlsSettings:
        cert, key = self.files(stem)
        return TlsSettings(self.ca, cert, key)

    def device_tls(self, uuid: str, thing: str | None = None) -> TlsSettings:
        cert, key = self.device(uuid, thing)
        return TlsSettings(self.ca, cert, key)

    def agent_overrides(self, uuid: str, thing: str | None = None) -> list[str]:
        """``--set`` items giving an agent the device's identity on both links (the test broker, the cloud)."""
        cert, key = self.device(uuid, thing)
        return [f"{section}.{key_name}={value}" for section in ("mqtt", "cloud")
                for key_name, value in (("ca_file", self.ca), ("cert_file", cert), ("key_file", key))]

    def agent_links(self, config: dict, uuid: str, thing: str | None = None) -> None:
        """The same, into a loaded configuration's ``[mqtt]`` and ``[cloud]``."""
        cert, key = self.device(uuid, thing)
        for section in ("mqtt", "cloud"):
            config[section].update(ca_file=self.ca, cert_file=cert, key_file=key)


_session: TestPki | None = None
_session_lock = threading.Lock()


def session_pki() -> TestPki:
    global _session
    with _session_lock:
        if _session is None:
            directory = pathlib.Path(tempfile.mkdtemp(prefix="fleetlet-pki-"))
            atexit.register(shutil.rmtree, directory, True)
            _session = TestPki(directory)
        return _session


@pytest.fixture(scope="session")
def pki() -> TestPki:
    return session_pki()
