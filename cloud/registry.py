"""A private image registry on loopback for development, tests and benchmarks (as `cloud.loopback` runs Mosquitto).

Debian's `docker-registry` (the CNCF distribution registry), run as our own process with a configuration written
here: 127.0.0.1 only, TLS with a certificate of the development CA (`cloud.pki`), htpasswd (bcrypt) users. dockerd
trusts it through ``/etc/docker/certs.d/127.0.0.1:PORT/ca.crt``, which it reads on every pull (no restart).
Started and stopped by pid; the Debian package's own service is never used.

    python3 -m cloud.registry start DIR --port 5443 --pki var/pki    # configure, start, push the test images
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import signal
import ssl
import subprocess
import sys
import urllib.request

from cloud.loopback import wait_until

CERTS_D = pathlib.Path("/etc/docker/certs.d")
BUILD = pathlib.Path(__file__).resolve().parent.parent / "tests" / "images" / "build-registry.sh"
TEST_REPOSITORIES = ("fleetlet-test/app:1", "fleetlet-test/app:2", "fleetlet-test/app:3", "fleetlet-test/big:1")


def htpasswd_line(user: str, password: str) -> str:
    """One htpasswd entry, bcrypt (the only scheme the registry accepts)."""
    import bcrypt  # a test and development dependency only
    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"


def config_text(port: int, storage: pathlib.Path, cert: str, key: str, htpasswd: pathlib.Path) -> str:
    return "\n".join([
        "version: 0.1",
        "log: {level: warn}",
        "storage:",
        f"  filesystem: {{rootdirectory: {storage}}}",
        "  delete: {enabled: true}",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        f"  tls: {{certificate: {cert}, key: {key}}}",
        "auth:",
        f"  htpasswd: {{realm: fleetlet-test, path: {htpasswd}}}",
        "",
    ])


class Registry:
    """One registry process on 127.0.0.1:`port`, its files in `directory` (config, htpasswd, storage, log)."""

    def __init__(self, directory: str | os.PathLike[str], port: int, pki_dir: str | os.PathLike[str],
                 user: str = "fleetlet", password: str | None = None) -> None:
        self.dir = pathlib.Path(directory).resolve()
        self.port = port
        self.pki = pathlib.Path(pki_dir).resolve()
        self.user = user
        self.password = password if password is not None else os.urandom(9).hex()
        self.storage = self.dir / "storage"
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ca(self) -> str:
        return str(self.pki / "ca.crt")

    def configure(self) -> "Registry":
        self.dir.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        htpasswd = self.dir / "htpasswd"
        htpasswd.write_text(htpasswd_line(self.user, self.password))
        (self.dir / "config.yml").write_text(config_text(self.port, self.storage, str(self.pki / "server.crt"),
                                                         str(self.pki / "server.key"), htpasswd))
        return self

    def start(self) -> "Registry":
        """Start it (again, after a stop: same storage) and wait until it answers over TLS."""
        log = open(self.dir / "registry.log", "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.dir / "config.yml")],
                                     stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_until(self.answers, 20, f"the registry on {self.host}", 0.05)
        return self

    def answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the registry exited: {(self.dir / 'registry.log').read_text()[-2000:]}")
        context = ssl.create_default_context(cafile=self.ca)
        try:
            urllib.request.urlopen(f"https://{self.host}/v2/", timeout=2, context=context)
        except urllib.error.HTTPError as error:
            return error.code == 401  # up, and asking for credentials
        except OSError:
            return False
        return True

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """End the process (SIGKILL: as a crash or a cut link would) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(20)
        self.proc = None

    def trust(self) -> None:
        """Make dockerd trust the CA for this registry (read per pull: no restart)."""
        folder = CERTS_D / self.host
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.ca, folder / "ca.crt")

    def distrust(self) -> None:
        shutil.rmtree(CERTS_D / self.host, ignore_errors=True)

    def auth_config(self) -> dict[str, str]:
        return {"username": self.user, "password": self.password}

    def image(self, repository: str) -> str:
        return f"{self.host}/{repository}"

    def push_test_images(self, client) -> tuple[str, ...]:
        """Build the test images (tests/images/build-registry.sh), push them, and untag them locally, so that
        the engine has them only in the registry. Returns their names in this registry."""
        subprocess.run(["sh", str(BUILD), self.host], check=True, capture_output=True, timeout=300)
        names = tuple(self.image(repository) for repository in TEST_REPOSITORIES)
        for name in names:
            repository, _, tag = name.rpartition(":")
            for event in client.api.push(repository, tag, auth_config=self.auth_config(), stream=True, decode=True):
                if "error" in event:
                    raise RuntimeError(f"push {name}: {event['error']}")
        for name in names:
            client.images.remove(name)
        return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m cloud.registry")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="configure and start a registry, push the test images")
    start.add_argument("directory")
    start.add_argument("--port", type=int, default=5443)
    start.add_argument("--pki", default="var/pki")
    args = parser.parse_args(argv)
    import docker
    directory = pathlib.Path(args.directory)
    password_file = directory / "password"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not password_file.exists():
        password_file.write_text(os.urandom(9).hex())
        password_file.chmod(0o600)
    registry = Registry(directory, args.port, args.pki, password=password_file.read_text().strip()).configure()
    registry.trust()
    if not registry.answers():
        registry.start()
        registry.proc = None  # left running: the development registry outlives this command
    pushed = directory / "pushed"  # once: each build makes a new random layer, which would pile up in storage
    if not pushed.exists():
        registry.push_test_images(docker.from_env(timeout=120))
        pushed.write_text("\n".join(TEST_REPOSITORIES) + "\n")
    print(f"registry on {registry.host}: user {registry.user}, password in {password_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
