"""Who may call what on the local API, and what each request asks for: pure (a request in, an action or a
refusal out).

Two kinds of caller hold a key (``Authorization: Bearer KEY``): the operator (``api.key_file``) may call
everything; a service of the target that opted in holds its app's key (``keys.service_key``) and may call
only what concerns its app: its app's services and logs, and the device's local shadow (the shadow is
the device's; its applications are who reads and reports it, as Greengrass's local shadow lets them).
No key, or an unknown one: 401. A key outside its app: 403.
"""
from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from actors.api.http import HttpError, Request, Response, error_response
from messages.protocol import json as strict_json
from messages.protocol.json import JSONObject
from messages.protocol.shadow_document import ShadowError
from messages.protocol.shadow_topics import CLASSIC_SHADOW, validate_shadow_name

MAX_TAIL = 10_000
SERVICE_VERBS = ("restart", "stop", "start")
_UNAUTHORISED = (("WWW-Authenticate", 'Bearer realm="fleetlet"'),)


@dataclass(frozen=True)
class Operator:
    pass


@dataclass(frozen=True)
class AppCaller:
    app_id: str


Caller = Operator | AppCaller


# -- what a request asks for ------------------------------------------------------------------------------
@dataclass(frozen=True)
class GetStatus:
    pass


@dataclass(frozen=True)
class GetPlan:
    pass


@dataclass(frozen=True)
class PollNow:
    pass


@dataclass(frozen=True)
class GetMetrics:
    pass


@dataclass(frozen=True)
class ServiceCommand:
    app_id: str
    service_name: str
    verb: str  # restart | stop | start


@dataclass(frozen=True)
class GetLogs:
    app_id: str
    service_name: str
    tail: int
    follow: bool


@dataclass(frozen=True)
class GetShadow:
    name: str


@dataclass(frozen=True)
class PatchShadow:
    name: str
    reported: JSONObject


Action = GetStatus | GetPlan | PollNow | GetMetrics | ServiceCommand | GetLogs | GetShadow | PatchShadow


def authenticate(headers: Mapping[str, str], operator_key: str, app_keys: Mapping[str, str]) -> Caller | Response:
    """The caller the bearer key names (``app_keys``: key -> app id), or the 401 answer."""
    scheme, _, key = headers.get("authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return error_response(401, "an API key is required (Authorization: Bearer KEY)", _UNAUTHORISED)
    if operator_key and hmac.compare_digest(key.encode(), operator_key.encode()):
        return Operator()
    for candidate, app_id in app_keys.items():
        if hmac.compare_digest(key.encode(), candidate.encode()):
            return AppCaller(app_id)
    return error_response(401, "unknown API key", _UNAUTHORISED)


def route(request: Request, caller: Caller) -> Action | Response:
    """The action the request asks for, if ``caller`` may; otherwise the answer (404, 405, 400, 403)."""
    try:
        action = _match(request)
    except HttpError as exc:
        return error_response(exc.status, exc.message)
    if isinstance(caller, AppCaller) and not _within(action, caller.app_id):
        return error_response(403, f"this key may call only what concerns app {caller.app_id}")
    return action


def _within(action: Action, app_id: str) -> bool:
    if isinstance(action, (ServiceCommand, GetLogs)):
        return action.app_id == app_id
    return isinstance(action, (GetShadow, PatchShadow))


def _match(request: Request) -> Action:
    segments, method = request.segments, request.method
    if segments == ("metrics",):
        _method(method, "GET")
        _params(request, ())
        return GetMetrics()
    if not segments or segments[0] != "v1":
        raise HttpError(404, "no such resource")
    rest = segments[1:]
    if rest in (("status",), ("plan",)):
        _method(method, "GET")
        _params(request, ())
        return GetStatus() if rest == ("status",) else GetPlan()
    if rest == ("poll-now",):
        _method(method, "POST")
        _params(request, ())
        return PollNow()
    if rest == ("shadow",):
        _method(method, "GET", "PATCH")
        _params(request, ("name",))
        name = _shadow_name(request.query.get("name", CLASSIC_SHADOW))
        return GetShadow(name) if method == "GET" else PatchShadow(name, _reported(request.body))
    if len(rest) == 5 and rest[0] == "apps" and rest[2] == "services":
        app_id, service, verb = rest[1], rest[3], rest[4]
        if verb in SERVICE_VERBS:
            _method(method, "POST")
            _params(request, ())
            return ServiceCommand(app_id, service, verb)
        if verb == "logs":
            _method(method, "GET")
            _params(request, ("tail", "follow"))
            return GetLogs(app_id, service, _tail(request.query.get("tail", "100")),
                           _flag(request.query.get("follow", "0"), "follow"))
    raise HttpError(404, "no such resource")


def _method(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise HttpError(405, f"use {' or '.join(allowed)}")


def _params(request: Request, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise HttpError(400, f"unknown query parameter {unknown[0]!r}")


def _tail(value: str) -> int:
    if not value.isdigit() or int(value) > MAX_TAIL:
        raise HttpError(400, f"tail must be an integer from 0 to {MAX_TAIL}")
    return int(value)


def _flag(value: str, name: str) -> bool:
    if value not in ("0", "1", "true", "false"):
        raise HttpError(400, f"{name} must be 0 or 1")
    return value in ("1", "true")


def _shadow_name(name: str) -> str:
    if name == CLASSIC_SHADOW:
        return name
    try:
        validate_shadow_name(name)
    except ShadowError as exc:
        raise HttpError(400, f"name: {exc.message}") from None
    return name


def _reported(body: bytes) -> JSONObject:
    """``{"reported": {...}}``, strictly: the same JSON rules as every other boundary (32 levels deep, as a
    shadow payload)."""
    try:
        value = strict_json.decode(body, max_depth=32)
    except strict_json.JSONRefused as exc:
        raise HttpError(400, f"Invalid JSON: {exc}") from None
    if not isinstance(value, dict) or set(value) != {"reported"} or not isinstance(value["reported"], dict):
        raise HttpError(400, 'the body must be {"reported": {...}}')
    if not value["reported"]:
        raise HttpError(400, "reported is empty: nothing to report")
    return value["reported"]
