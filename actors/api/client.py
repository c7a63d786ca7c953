"""The local API from another process: what ``run.py status``, ``plan`` and ``poll-now`` (and the tests) use.

One request per connection over the Unix socket ``api.socket``, with the operator's key from
``api.key_file`` (so only the agent's user, or root, can read it).
"""
from __future__ import annotations

import os
import socket

from actors.api.http import MAX_HEAD
from actors.api.keys import ApiKeyError, operator_key
from messages.protocol import json as strict_json

MAX_ANSWER = 8 * 1024 * 1024


class ApiUnavailable(RuntimeError):
    """No agent answers on the API socket, or its key cannot be read; the text says which."""


def request(config: dict, method: str, path: str, body: bytes = b"", key: str | None = None,
            timeout: float = 10.0) -> tuple[int, bytes]:
    """(status, body) of one request; ``key`` defaults to the operator's."""
    section = config["api"]
    if not os.path.exists(section["socket"]):
        raise ApiUnavailable(f"no agent is answering on {section['socket']}")
    if key is None:
        try:
            key = operator_key(section["key_file"])
        except ApiKeyError as exc:
            raise ApiUnavailable(f"no agent API key: {exc}") from None
    head = (f"{method} {path} HTTP/1.1\r\nHost: fleetlet\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n")
    if body:
        head += "Content-Type: application/json\r\n"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(section["socket"])
        sock.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while len(data) <= MAX_ANSWER and (chunk := sock.recv(65536)):
            data += chunk
    except (FileNotFoundError, ConnectionRefusedError):
        raise ApiUnavailable(f"no agent is answering on {section['socket']}") from None
    except OSError as exc:
        raise ApiUnavailable(f"the agent API on {section['socket']}: {exc}") from None
    finally:
        sock.close()
    return parse_answer(data)


def parse_answer(data: bytes) -> tuple[int, bytes]:
    end = data.find(b"\r\n\r\n")
    status_line = data[:min(end if end >= 0 else len(data), MAX_HEAD)].split(b"\r\n", 1)[0].split(b" ")
    if end < 0 or len(status_line) < 2 or not status_line[1].isdigit():
        raise ApiUnavailable("the agent API gave a malformed answer")
    return int(status_line[1]), data[end + 4:]


def call_json(config: dict, method: str, path: str, value: object = None) -> tuple[int, object]:
    """(status, decoded JSON body); an error answer's body is ``{"error": ...}``."""
    body = b"" if value is None else strict_json.encode(value)
    status, answer = request(config, method, path, body)
    try:
        return status, strict_json.decode(answer)
    except strict_json.JSONRefused as exc:
        raise ApiUnavailable(f"the agent API answered {status} with invalid JSON: {exc}") from None
