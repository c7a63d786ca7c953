"""The HTTP API: target states with ETags, device reports, shadows (AWS HTTPS and EMQX Fleets reads).

Called from the HTTP server's threads (:mod:`cloud.http_server`): database work goes to the shared
worker pool (so the number of database connections stays fixed) and shadow requests go to the event
loop, where the shadow service orders them per thing.

Every call but ``/healthz`` needs ``Authorization: Bearer <token>``: a device's token for that device
(or its thing), or the operator's admin token for anything. No or an unknown token: 401; another
device's token: 403. Errors are JSON: AWS's error document (``{"code", "message", "timestamp",
"clientToken"}``) for what the shadow service refuses, ``{"error": "..."}`` for everything else.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import re
from concurrent.futures import Executor
from typing import Callable
from urllib.parse import unquote

from cloud.documents import emqx_shadow_view, etag_matches
from cloud.settings import CloudSettings
from cloud.shadow_algebra import error_payload, shadow_not_found
from cloud.shadow_service import ShadowAddress, ShadowService
from cloud.store import CloudStore, CloudStoreError, DeviceRecord
from messages.protocol import api
from messages.protocol import json as strict_json
from messages.protocol.shadow_document import ShadowError
from messages.protocol.shadow_topics import CLASSIC_SHADOW, validate_shadow_name, validate_thing_name
from messages.protocol.target_state import (
    InvalidTargetState,
    parse_target_state,
    to_json,
)

SHADOW_TIMEOUT = 30.0  # seconds an HTTP shadow request may wait for the event loop
MIN_DEVICE_TOKEN_LENGTH = 8
ADMIN = "admin"
log = logging.getLogger("fleetlet.cloud.http")


class ApiError(Exception):
    """An answer other than success: ``status`` and a JSON ``body``."""

    def __init__(self, status: int, message: str | None = None, body: dict | None = None,
                 headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status = status
        self.body = body if body is not None else {"error": message}
        self.headers = headers


@dataclasses.dataclass(frozen=True)
class ApiRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclasses.dataclass(frozen=True)
class ApiResponse:
    status: int
    body: dict | None = None
    headers: tuple[tuple[str, str], ...] = ()


class CloudApi:
    """Routes and answers requests; callable from any thread."""

    def __init__(self, settings: CloudSettings, store: CloudStore, executor: Executor, service: ShadowService,
                 loop: asyncio.AbstractEventLoop, publish: Callable[[str, bytes], None], health: Callable[[], dict],
                 clock: Callable[[], float]):
        self.settings = settings
        self._store = store
        self._executor = executor
        self._service = service
        self._loop = loop
        self._publish = publish
        self._health = health
        self._clock = clock
        # (method, path pattern, handler); a pattern's groups are percent-decoded and passed on.
        self._routes = [
            ("GET", r"/healthz", self._get_health),
            ("GET", api.TARGET_STATE_ROUTE, self._get_target),
            ("POST", api.TARGET_STATE_ROUTE, self._set_target),
            ("PATCH", re.escape(api.DEVICE_STATE_PATH), self._patch_state),
            ("GET", api.DEVICE_STATE_ROUTE, self._get_state),
            ("PUT", api.DEVICE_ROUTE, self._register_device),
            ("GET", api.SHADOW_ROUTE, self._shadow("get")),
            ("POST", api.SHADOW_ROUTE, self._shadow("update")),
            ("DELETE", api.SHADOW_ROUTE, self._shadow("delete")),
            ("GET", api.EMQX_SHADOW_ROUTE, self._get_emqx_shadow),
        ]

    def handle(self, request: ApiRequest) -> ApiResponse:
        try:
            handler, params = self._match(request)
            return handler(request, *params)
        except ApiError as exc:
            return ApiResponse(exc.status, exc.body, exc.headers)
        except CloudStoreError as exc:
            log.error("%s %s: %s", request.method, request.path, exc)
            return ApiResponse(500, {"error": "the store failed; retry later"})
        except Exception:  # noqa: BLE001 - a bug must cost one request a 500, never the server
            log.exception("%s %s failed", request.method, request.path)
            return ApiResponse(500, {"error": "internal error"})

    def _match(self, request: ApiRequest):
        allowed = []
        for method, pattern, handler in self._routes:
            match = re.fullmatch(pattern, request.path)
            if match is None:
                continue
            if method == request.method:
                return handler, [unquote(group) for group in match.groups()]
            allowed.append(method)
        if allowed:
            raise ApiError(405, f"{request.method} is not supported here", headers=(("Allow", ", ".join(allowed)),))
        raise ApiError(404, f"no endpoint at {request.path}")

    # --- authentication ------------------------------------------------------------------------------------

    def _caller(self, request: ApiRequest) -> DeviceRecord | str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "send Authorization: Bearer <token>", headers=(("WWW-Authenticate", "Bearer"),))
        if hmac.compare_digest(token.encode(), self.settings.admin_token.encode()):
            return ADMIN
        device = self._db(self._store.device_for_token, token)
        if device is None:
            raise ApiError(401, "unknown token", headers=(("WWW-Authenticate", 'Bearer error="invalid_token"'),))
        return device

    def _for_device(self, request: ApiRequest, uuid: str) -> DeviceRecord | str:
        caller = self._caller(request)
        _valid_name("device uuid", uuid)
        if isinstance(caller, DeviceRecord) and caller.uuid != uuid:
            raise ApiError(403, f"this token is not device {uuid}'s")
        return caller

    def _for_thing(self, request: ApiRequest, thing: str) -> None:
        caller = self._caller(request)
        try:
            validate_thing_name(thing)
        except ShadowError as err:
            raise ApiError(400, body=error_payload(err, None, self._now())) from None
        if isinstance(caller, DeviceRecord) and caller.thing != thing:
            raise ApiError(403, f"this token is not thing {thing}'s")

    def _admin(self, request: ApiRequest) -> None:
        if self._caller(request) != ADMIN:
            raise ApiError(403, "this needs the admin token")

    # --- endpoints ---------------------------------------------------------------------------------------

    def _get_health(self, request: ApiRequest) -> ApiResponse:
        health = self._health()
        return ApiResponse(200 if health["ready"] else 503, health)

    def _get_target(self, request: ApiRequest, uuid: str) -> ApiResponse:
        self._for_device(request, uuid)
        target = self._db(self._store.target_state, uuid)
        if target is None:
            raise ApiError(404, f"no target state has been set for device {uuid}")
        headers = ((api.ETAG, target.etag), ("Cache-Control", "no-cache"))
        if etag_matches(request.headers.get(api.IF_NONE_MATCH.lower(), ""), target.etag):
            return ApiResponse(304, None, headers)
        return ApiResponse(200, target.document, headers)

    def _set_target(self, request: ApiRequest, uuid: str) -> ApiResponse:
        self._admin(request)
        _valid_name("device uuid", uuid)
        self._known_device(uuid)
        try:
            document = to_json(parse_target_state(request.body))
        except InvalidTargetState as exc:
            raise ApiError(400, f"invalid target state: {exc.reason}") from None
        etag, changed = self._db(self._store.set_target_state, uuid, document, self._now())
        if changed and self.settings.mqtt.poll_now:
            notice = json.dumps({"uuid": uuid, "etag": etag}).encode()
            self._loop.call_soon_threadsafe(self._publish, api.poll_now_topic(uuid), notice)
        return ApiResponse(200, {"uuid": uuid, "etag": etag, "changed": changed}, ((api.ETAG, etag),))

    def _patch_state(self, request: ApiRequest) -> ApiResponse:
        caller = self._caller(request)
        body = _json_object(request.body)
        if not body:
            raise ApiError(400, "the body must map at least one device uuid to its report")
        for uuid, report in body.items():
            _valid_name("device uuid", uuid)
            if isinstance(caller, DeviceRecord) and caller.uuid != uuid:
                raise ApiError(403, f"this token is not device {uuid}'s")
            if not isinstance(report, dict):
                raise ApiError(400, f"the report of {uuid} must be an object")
            self._known_device(uuid)
        now = self._now()
        for uuid, report in body.items():
            self._db(self._store.apply_report, uuid, report, now)
        return ApiResponse(200, {"stored": list(body)})

    def _get_state(self, request: ApiRequest, uuid: str) -> ApiResponse:
        self._admin(request)
        _valid_name("device uuid", uuid)
        state = self._db(self._store.device_state, uuid)
        if state is None:
            raise ApiError(404, f"device {uuid} has not reported yet")
        return ApiResponse(200, {"uuid": uuid, "state": state.state, "updated_at": state.updated_at,
                               "reports": self._db(self._store.report_count, uuid)})

    def _register_device(self, request: ApiRequest, uuid: str) -> ApiResponse:
        self._admin(request)
        _valid_name("device uuid", uuid)
        body = _json_object(request.body)
        if set(body) != {"thing", "token"}:
            raise ApiError(400, 'the body must be {"thing": ..., "token": ...}')
        _valid_name("thing", body["thing"])
        token = body["token"]
        if not isinstance(token, str) or len(token) < MIN_DEVICE_TOKEN_LENGTH or token != token.strip():
            raise ApiError(400, f"token must be a string of at least {MIN_DEVICE_TOKEN_LENGTH} characters, "
                                "without surrounding spaces")
        if hmac.compare_digest(token.encode(), self.settings.admin_token.encode()):
            raise ApiError(400, "a device token cannot be the admin token")
        try:
            created = self._db(self._store.register_device, uuid, body["thing"], token)
        except ValueError as exc:
            raise ApiError(409, str(exc)) from None
        return ApiResponse(201 if created else 200, {"uuid": uuid, "thing": body["thing"]})

    def _shadow(self, operation: str):
        def handler(request: ApiRequest, thing: str) -> ApiResponse:
            self._for_thing(request, thing)
            address = ShadowAddress(thing, self._shadow_name(request))
            future = asyncio.run_coroutine_threadsafe(
                self._service.execute(address, operation, request.body, None), self._loop)
            result = future.result(SHADOW_TIMEOUT)
            assert result is not None  # only MQTT requests are ever ignored; this one came with a token
            return ApiResponse(result.code, result.body)

        return handler

    def _shadow_name(self, request: ApiRequest) -> str:
        names = request.query.get("name")
        if names is None:
            return CLASSIC_SHADOW
        try:
            if len(names) != 1:
                raise ShadowError(400, "Give one shadow name")
            return validate_shadow_name(names[0])
        except ShadowError as err:
            raise ApiError(400, body=error_payload(err, None, self._now())) from None

    def _get_emqx_shadow(self, request: ApiRequest, thing: str) -> ApiResponse:
        self._for_thing(request, thing)
        document = self._db(self._store.read_shadow, thing, CLASSIC_SHADOW).document
        if document is None:
            err = shadow_not_found(thing)
            raise ApiError(404, body=error_payload(err, None, self._now()))
        return ApiResponse(200, emqx_shadow_view(document))

    # --- helpers -----------------------------------------------------------------------------------------

    def _known_device(self, uuid: str) -> None:
        if self._db(self._store.device, uuid) is None:
            raise ApiError(404, f"no device {uuid} is registered")

    def _db(self, method, *args):
        return self._executor.submit(method, *args).result()

    def _now(self) -> int:
        return int(self._clock())


def _valid_name(what: str, value) -> None:
    try:
        validate_thing_name(value)
    except ShadowError:
        raise ApiError(400, f"{what} must match [a-zA-Z0-9:_-]{{1,128}}") from None


def _json_object(body: bytes) -> dict:
    try:
        value = strict_json.decode(body)
    except strict_json.JSONRefused as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the body must be a JSON object")
    return value
