"""HTTP/1.1 for the local API, as pure functions: bytes in, a request or an error out; a response out as bytes.

The API serves a few JSON endpoints to local clients, one request per connection (``Connection: close``),
so this is far less than a general server: no chunked bodies, no keep-alive, no continuation lines. What it
accepts is bounded before it is parsed: a head of at most ``MAX_HEAD`` bytes, a body of at most ``MAX_BODY``
bytes given by ``Content-Length``, a path of printable ASCII whose segments are percent-decoded one by one
(so ``%2F`` never makes a new segment), each query parameter at most once.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import unquote

MAX_HEAD = 16 * 1024
MAX_BODY = 256 * 1024  # a shadow report stays far below the shadow payload limit (128 KiB)
MAX_HEADERS = 64
METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "OPTIONS"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_PATH = re.compile(r"/[\x21-\x7e]*\Z")


class HttpError(Exception):
    """The request is refused with ``status``; ``message`` says why (no input is echoed beyond a name)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Request:
    method: str
    segments: tuple[str, ...]  # the path's segments, each percent-decoded: "/v1/apps/1" -> ("v1", "apps", "1")
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, value: object, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, json.dumps(value, sort_keys=True).encode() + b"\n", headers=headers)


def error_response(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """The cloud API's error model: ``{"error": "..."}`` with the status."""
    return json_response(status, {"error": message}, headers)


def parse_request(data: bytes) -> Request | None:
    """The request in ``data``; None while it is incomplete. Raises :class:`HttpError` for what is refused."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEAD:
            raise HttpError(431, f"the request head exceeds {MAX_HEAD} bytes")
        return None
    if end > MAX_HEAD:
        raise HttpError(431, f"the request head exceeds {MAX_HEAD} bytes")
    try:
        head = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "the request head is not ASCII") from None
    request_line, *header_lines = head.split("\r\n")
    method, target = _request_line(request_line)
    headers = _headers(header_lines)
    if "chunked" in headers.get("transfer-encoding", "").lower() or "transfer-encoding" in headers:
        raise HttpError(411, "send the body with a Content-Length")
    length = _content_length(headers.get("content-length", "0"))
    body = data[end + 4:]
    if len(body) < length:
        return None
    path, _, query = target.partition("?")
    return Request(method, _segments(path), _query(query), headers, body[:length])


def _request_line(line: str) -> tuple[str, str]:
    parts = line.split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(400, "a malformed request line")
    method, target, _ = parts
    if method not in METHODS:
        raise HttpError(501, "an unknown method")
    if not _PATH.match(target):
        raise HttpError(400, "the request target must be an absolute path of printable ASCII")
    return method, target


def _headers(lines: list[str]) -> dict[str, str]:
    if len(lines) > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header fields")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name):
            raise HttpError(400, "a malformed header field")
        key = name.lower()
        if key in headers and key in ("content-length", "authorization", "host"):
            raise HttpError(400, f"header {key} given twice")
        headers[key] = value.strip(" \t")
    return headers


def _content_length(value: str) -> int:
    if not value.isdigit() or len(value) > 12:
        raise HttpError(400, "Content-Length must be a decimal number")
    length = int(value)
    if length > MAX_BODY:
        raise HttpError(413, f"the body exceeds {MAX_BODY} bytes")
    return length


def _segments(path: str) -> tuple[str, ...]:
    raw = path.split("/")[1:]
    if raw and raw[-1] == "":
        raw = raw[:-1]  # a trailing slash names the same resource
    segments = tuple(_decode(part) for part in raw)
    if any(part in ("", ".", "..") for part in segments):
        raise HttpError(400, "the path has an empty, '.' or '..' segment")
    return segments


def _query(query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        name, _, value = item.partition("=")
        name, value = _decode(name.replace("+", " ")), _decode(value.replace("+", " "))
        if name in params:
            raise HttpError(400, f"query parameter {name!r} given twice")
        params[name] = value
    return params


def _decode(text: str) -> str:
    try:
        decoded = unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, "a percent-escape that is not UTF-8") from None
    if any(ord(char) < 0x20 or ord(char) == 0x7f for char in decoded):
        raise HttpError(400, "a control character in the path or query")
    return decoded


def render(response: Response) -> bytes:
    """The whole response, with ``Connection: close``."""
    reason = HTTPStatus(response.status).phrase
    lines = [f"HTTP/1.1 {response.status} {reason}", f"Content-Type: {response.content_type}",
             f"Content-Length: {len(response.body)}", "Connection: close",
             *(f"{name}: {value}" for name, value in response.headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


def stream_head(status: int, content_type: str) -> bytes:
    """The head of a response whose body runs until the connection closes (a followed log)."""
    reason = HTTPStatus(status).phrase
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n"
            ).encode("latin-1")
