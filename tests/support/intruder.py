"""A local process that is not the agent: uid 65534 (nobody), talking raw bytes to the agent's ports."""
from __future__ import annotations

import json
import os
import pickle
import socket
import threading
import traceback
from collections.abc import Callable

NOBODY = 65534


class Marker:
    """Unpickling it creates the file ``path``: the code an attacker's frame would run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def pickle_frame(path: str) -> bytes:
    """A frame as thespian's transport reads it, whose unpickling creates ``path``."""
    body = pickle.dumps(Marker(path))
    return b"%d>" % len(body) + body


def as_nobody(job: Callable[[], object]) -> object:
    """``job()`` run in a forked child that dropped to uid/gid 65534 first; its JSON-able result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the test
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write_end, json.dumps({"uid": os.getuid(), "result": job()}).encode())
            code = 0
        except BaseException:  # noqa: BLE001 - shown in the test's output, then the child ends
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the intruder failed"
    answer = json.loads(data)
    assert answer["uid"] == NOBODY
    return answer["result"]


def send_and_watch(port: int, data: bytes, patience: float = 3.0) -> str:
    """Send ``data`` to 127.0.0.1:``port``; "closed" if the peer then closes the connection, "open" if it
    still holds it after ``patience`` seconds (buffering, waiting for more)."""
    with socket.create_connection(("127.0.0.1", port), timeout=patience) as conn:
        try:
            conn.sendall(data)
            while conn.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError):
            return "closed"
        except TimeoutError:
            return "open"
    return "closed"


class FakeAdmin:
    """Listens on the admin port and answers every connection with a pickle that would create ``marker``."""

    def __init__(self, port: int, marker: str) -> None:
        self.server = socket.create_server(("127.0.0.1", port))
        self.answer = pickle_frame(marker)
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return  # closed
            self.connections += 1
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(self.answer)
                    conn.recv(65536)  # until the client gives up on it
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()
