"""Sockets of the local API, without policy: listen, accept, read a request, write an answer (the actor's
shell uses it from its own thread, woken by ThespianWatch, so no thread crosses into the actor).

The Unix socket is made with mode 0660 and, when ``api.group`` names one, that group, so membership of
the group is what lets a local program connect at all (the key then says what it may call).
"""
from __future__ import annotations

import grp
import os
import socket
import stat
import time
from dataclasses import dataclass, field

from actors.api.http import HttpError, Request, error_response, parse_request, render

MAX_CONNECTIONS = 64
READ_TIMEOUT = 10.0  # seconds a client has to send its whole request


class ApiSocketError(RuntimeError):
    """The API cannot listen; the text says why."""


def listen_unix(path: str, group: str) -> socket.socket:
    """A listening Unix socket at ``path`` (a stale socket there is replaced; any other file is refused)."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
        else:
            raise ApiSocketError(f"api.socket: {path} exists and is not a socket")
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o660)  # the agent runs with umask 077: the mode is set, not inherited
        if group:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
    except (OSError, KeyError) as exc:
        sock.close()
        raise ApiSocketError(f"api.socket: cannot listen on {path}: {exc}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def listen_loopback(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise ApiSocketError(f"api.port: cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


@dataclass
class Connection:
    sock: socket.socket
    opened: float = field(default_factory=time.monotonic)
    data: bytes = b""
    done: bool = False  # a request was read: the connection waits for its answer, not for more bytes

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> Request | None | bytes:
        """The request once complete; None while incomplete; the error answer's bytes when refused or closed."""
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return None
        except OSError:
            chunk = b""
        if not chunk:
            return b""  # the client went away
        self.data += chunk
        try:
            request = parse_request(self.data)
        except HttpError as exc:
            return render(error_response(exc.status, exc.message))
        if request is not None:
            self.done = True
        return request

    def answer(self, raw: bytes) -> None:
        """Write the whole answer and close. A local client reads at once; one that does not is cut off."""
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(5.0)
            self.sock.sendall(raw)
        except OSError:
            pass
        finally:
            self.close()

    def refuse(self, raw: bytes) -> None:
        """Answer a request not read yet (the API is full): what the client sends meanwhile is read briefly
        and dropped, so that closing does not reset the connection before the client reads the answer."""
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(0.1)
            self.sock.sendall(raw)
            self.sock.shutdown(socket.SHUT_WR)
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def accept(listener: socket.socket) -> Connection | None:
    try:
        sock, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
        return None
    sock.setblocking(False)
    return Connection(sock)
