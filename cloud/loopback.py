"""The local development stack's plumbing, shared by the demo, the tests and the benchmarks: free loopback
ports, waiting for a listener, and a Mosquitto broker owned (and ended) by pid."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def listening(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """The predicate's first truthy value; TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Mosquitto:
    """A real Mosquitto on loopback, configured by :func:`cloud.pki.broker_config` from the PKI in ``pki_dir``:
    TLS with client certificates and the ACL, exactly as an operator deploys it. ``tls=False`` adds nothing but
    an anonymous plaintext listener instead (the benchmark of what TLS costs, and the few tests of plain MQTT);
    ``plain_port`` serves both at once. The broker's output goes to ``mosquitto-PORT.log`` in ``workdir``. It runs
    as whoever starts it, which owns the (0600) keys it reads.
    """

    def __init__(self, workdir: str | os.PathLike, port: int | None = None, host: str = LOOPBACK,
                 pki_dir: str | os.PathLike | None = None, tls: bool = True, plain_port: int | None = None):
        if tls and pki_dir is None:
            raise ValueError("a TLS broker needs the PKI directory (run.py pki init DIR)")
        self.workdir, self.host, self.tls = os.fspath(workdir), host, tls
        self.pki_dir = None if pki_dir is None else os.fspath(pki_dir)
        self.port = port or free_port()
        self.plain_port = plain_port
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Mosquitto":
        from cloud.pki import broker_config, plaintext_conf_text  # the PKI's imports only where a broker runs

        own = os.path.join(self.workdir, f"mosquitto-{self.port}")
        os.makedirs(own, exist_ok=True)
        if self.pki_dir is not None and self.tls:
            conf_path = str(broker_config(self.pki_dir, self.port, self.host, self.plain_port, into=own,
                                          user=getpass.getuser()))
        else:
            conf_path = os.path.join(own, "mosquitto.conf")
            with open(conf_path, "w") as fh:
                fh.write(plaintext_conf_text(self.port, self.host))
        with open(os.path.join(self.workdir, f"mosquitto-{self.port}.log"), "ab") as log:
            self.proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", conf_path],
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._listening, 10, "mosquitto to listen")
        return self

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {self.proc.returncode} (log in {self.workdir})")
        return listening(self.port, self.host)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=5.0)
