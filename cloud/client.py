"""A small HTTP client of the cloud API, for the operator commands and the tests."""
from __future__ import annotations

import dataclasses
import http.client
import json
from urllib.parse import quote, urlsplit

from messages.protocol import api


class CloudUnreachable(Exception):
    """No answer from the cloud (refused, timed out, connection dropped)."""


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self):
        """The decoded body, or None when there is none."""
        return json.loads(self.body) if self.body else None


class CloudClient:
    """Calls ``base_url`` (http or https) with ``Authorization: Bearer <token>`` when a token is given."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 10.0):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{base_url!r}: expected http://host:port or https://host:port")
        self.base_url = base_url.rstrip("/")
        self._parts = parts
        self._token = token
        self._timeout = timeout

    def request(self, method: str, path: str, body: bytes | dict | list | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        sent = dict(headers or {})
        if self._token is not None:
            sent.setdefault("Authorization", f"Bearer {self._token}")
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        if body is not None:
            sent["Content-Length"] = str(len(body))
        kind = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
        connection = kind(self._parts.hostname, self._parts.port, timeout=self._timeout)
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return Reply(response.status, {name.lower(): value for name, value in response.getheaders()},
                         response.read())
        except (OSError, http.client.HTTPException) as exc:
            raise CloudUnreachable(f"{method} {self.base_url}{path}: {exc}") from exc
        finally:
            connection.close()

    # --- shadows (AWS HTTPS) -----------------------------------------------------------------------------

    def get_shadow(self, thing: str, name: str | None = None) -> Reply:
        return self.request("GET", _shadow_path(thing, name))

    def update_shadow(self, thing: str, request: dict | bytes, name: str | None = None) -> Reply:
        return self.request("POST", _shadow_path(thing, name), request)

    def delete_shadow(self, thing: str, name: str | None = None) -> Reply:
        return self.request("DELETE", _shadow_path(thing, name))

    def emqx_shadow(self, thing: str) -> Reply:
        return self.request("GET", api.emqx_shadow_path(thing))

    # --- devices -----------------------------------------------------------------------------------------

    def get_target(self, uuid: str, etag: str | None = None) -> Reply:
        headers = {} if etag is None else {api.IF_NONE_MATCH: etag}
        return self.request("GET", api.target_state_path(uuid), headers=headers)

    def set_target(self, uuid: str, document: dict | bytes) -> Reply:
        return self.request("POST", api.target_state_path(uuid), document)

    def report_state(self, reports: dict | bytes) -> Reply:
        return self.request("PATCH", api.DEVICE_STATE_PATH, reports)

    def device_state(self, uuid: str) -> Reply:
        return self.request("GET", api.device_state_path(uuid))

    def register_device(self, uuid: str, thing: str, token: str) -> Reply:
        return self.request("PUT", api.device_path(uuid), {"thing": thing, "token": token})

    def health(self) -> Reply:
        return self.request("GET", "/healthz")


def _shadow_path(thing: str, name: str | None) -> str:
    path = api.shadow_path(thing)
    return path if name is None else f"{path}?name={quote(name, safe='')}"
