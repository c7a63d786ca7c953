"""The local development stack's plumbing, shared by the demo, the tests and the benchmarks: free loopback
ports, waiting for a listener, and a Mosquitto broker owned (and ended) by pid."""
from __future__ import annotations

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
    """A real Mosquitto listening on loopback only.

    Nagle's algorithm is off (``set_tcp_nodelay``), as production brokers run it: Mosquitto's default holds
    each small answer up to 40 ms behind the peer's delayed ACK, which every round trip would pay.
    """

    def __init__(self, workdir: str | os.PathLike, port: int | None = None, host: str = LOOPBACK):
        self.workdir, self.host = os.fspath(workdir), host
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Mosquitto":
        conf_path = os.path.join(self.workdir, f"mosquitto-{self.port}.conf")
        with open(conf_path, "w") as fh:
            fh.write(f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n"
                     "max_queued_messages 10000\nmax_inflight_messages 20\nset_tcp_nodelay true\n")
        self.proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", conf_path],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: listening(self.port, self.host), 10, "mosquitto to listen")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=5.0)
