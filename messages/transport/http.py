"""The agent's HTTP client for the cloud API: bearer token, timeouts, JSON, and one error type."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

MAX_RESPONSE_BYTES = 1024 * 1024


class CloudError(Exception):
    """The cloud could not be reached or answered with something unusable; ``status`` when it answered."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict  # lower-case names
    body: bytes

    def json(self):
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError) as exc:
            raise CloudError(f"the cloud answered {self.status} with a body that is not JSON: {exc}",
                             self.status) from None


@dataclass(frozen=True)
class CloudClient:
    base_url: str
    token: str
    timeout: float

    @classmethod
    def from_config(cls, config: dict) -> "CloudClient":
        return cls(config["cloud"]["url"].rstrip("/"), config["device"]["token"], config["cloud"]["timeout"])

    def request(self, method: str, path: str, body=None, headers: dict | None = None,
                ok: tuple[int, ...] = (200,)) -> Response:
        """Send a request; statuses outside ``ok`` raise CloudError carrying the status."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                response = Response(reply.status, _lower(reply.headers), reply.read(MAX_RESPONSE_BYTES + 1))
        except urllib.error.HTTPError as exc:
            response = Response(exc.code, _lower(exc.headers), exc.read(MAX_RESPONSE_BYTES + 1))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise CloudError(f"{method} {path}: {getattr(exc, 'reason', exc)}") from None
        if len(response.body) > MAX_RESPONSE_BYTES:
            raise CloudError(f"{method} {path}: response larger than {MAX_RESPONSE_BYTES} bytes",
                             response.status)
        if response.status not in ok:
            raise CloudError(f"{method} {path}: HTTP {response.status}: {response.body[:300]!r}",
                             response.status)
        return response


def quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _lower(headers) -> dict:
    return {k.lower(): v for k, v in (headers or {}).items()}
