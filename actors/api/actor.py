"""The local API's actor: a thin shell around ``routes`` (who may call what), ``views`` (what it answers)
and ``server`` (its sockets).

It waits on its sockets with ThespianWatch, so requests are read in the actor's own thread, between its
messages, and nothing crosses threads but a followed log (a thread that only copies the engine's stream to
its client). What needs the agent is asked of it by message: status of the supervisor (one ask at a time,
answered to every caller waiting for it), a poll, a restart, a stop or a start are published like any other
command, a shadow report goes to the listener as a handler's answer would (so it takes the same durable
outbox). What the store holds (the local shadow, the target, the errors) is read from it, read-only.
"""
from __future__ import annotations

import grp
import time
from collections.abc import Callable
from dataclasses import dataclass

from thespian.actors import ThespianWatch, WatchMessage

import messages
from actors.api import logs, metrics
from actors.api.http import Request, Response, error_response, json_response, render
from actors.api.keys import operator_key, opted_in, service_key
from actors.api.routes import (
    Action,
    AppCaller,
    Caller,
    GetLogs,
    GetMetrics,
    GetPlan,
    GetShadow,
    GetStatus,
    PatchShadow,
    PollNow,
    ServiceCommand,
    authenticate,
    route,
)
from actors.api.server import MAX_CONNECTIONS, READ_TIMEOUT, Connection, accept, listen_loopback, listen_unix
from actors.api.views import local_shadow, merged_report, status_document
from actors.runtime.base import FleetletActor
from actors.shadow.sync import channel_of
from actors.target.policy import POLICY_USES
from conf.schema import ConfigError
from messages.bus import runtime
from messages.bus import target as target_messages
from messages.bus.shadow import ShadowDeltaApplied
from messages.protocol.shadow_document import stored_form
from messages.protocol.target_state import InvalidTargetState, parse_target_state
from store import PendingReport, ShadowState, Store, StoreError, StoreMissing, TargetRecord, TargetRejection

STATUS_TIMEOUT = 5.0
HANDLER = "local-api"  # the name its shadow reports carry, as a handler's answers do


@dataclass(frozen=True)
class Sweep:
    """Timer payload: drop clients that are too slow, answer status waits that timed out."""


class Api(FleetletActor):
    uses = ("api", "device.uuid", "device.thing", "store", "actors", "shadow.names", *POLICY_USES)

    @classmethod
    def check_config(cls, config: dict) -> None:
        group = config["api"]["group"]
        if group:
            try:
                grp.getgrnam(group)
            except KeyError:
                raise ConfigError(f"api.group: no group {group!r} on this device") from None

    def started(self) -> None:
        section = self.config["api"]
        self.key = operator_key(section["key_file"], create=True)
        self.listeners = [listen_unix(section["socket"], section["group"])]
        if section["port"]:
            self.listeners.append(listen_loopback(section["port"]))
        self.connections: dict[int, Connection] = {}
        # Callers waiting for the supervisor's status: each with how to answer from it.
        self.waiting: list[tuple[Connection, Callable[[runtime.StatusReply], Response]]] = []
        self.asked_at: float | None = None
        self.patches = 0
        self.recent: dict[str, dict] = {}  # per shadow, the top-level keys answered and not yet seen in the store
        self.streams = logs.Streams(self.config["device"]["uuid"])
        self.counters = metrics.ApiCounters()
        self.after(1.0, Sweep())

    def stopping(self) -> None:
        for sock in getattr(self, "listeners", []):
            sock.close()
        for conn in getattr(self, "connections", {}).values():
            conn.close()

    # -- the shell: every handler returns the sockets to watch --------------------------------------------
    def receiveMessage(self, msg: object, sender) -> ThespianWatch | None:
        if isinstance(msg, WatchMessage):
            self._guard(self._ready, list(msg.ready))
        else:
            super().receiveMessage(msg, sender)
        if self._crashed or not hasattr(self, "listeners"):
            return None
        return ThespianWatch([sock.fileno() for sock in self.listeners] +
                             [fd for fd, conn in self.connections.items() if not conn.done])

    def _ready(self, ready: list[int]) -> None:
        for listener in self.listeners:
            if listener.fileno() in ready:
                while (conn := accept(listener)) is not None:
                    if len(self.connections) >= MAX_CONNECTIONS:  # refused at once: never left readable, spinning
                        conn.refuse(render(error_response(503, f"{MAX_CONNECTIONS} requests are open already")))
                    else:
                        self.connections[conn.fileno()] = conn
        for fd in ready:
            conn = self.connections.get(fd)
            if conn is None or conn.done:
                continue
            got = conn.read()
            if isinstance(got, bytes):
                self._finish(conn, got)
            elif got is not None:
                self._serve(conn, got)

    def _finish(self, conn: Connection, raw: bytes) -> None:
        self.connections.pop(conn.fileno(), None)
        if raw:
            conn.answer(raw)
        else:
            conn.close()

    def on_timer(self, payload: object) -> None:
        if not isinstance(payload, Sweep):
            return
        now = time.monotonic()
        for conn in [c for c in self.connections.values() if not c.done and now - c.opened > READ_TIMEOUT]:
            self._finish(conn, render(error_response(408, "the request did not arrive in time")))
        if self.asked_at is not None and now - self.asked_at > STATUS_TIMEOUT:
            waiting, self.waiting, self.asked_at = self.waiting, [], None
            for conn, _ in waiting:
                self._finish(conn, render(error_response(503, "the supervisor did not answer in time")))
        self.after(1.0, Sweep())

    # -- requests -----------------------------------------------------------------------------------------
    def _serve(self, conn: Connection, request: Request) -> None:
        caller = authenticate(request.headers, self.key, self._app_keys())
        action = caller if isinstance(caller, Response) else route(request, caller)
        if isinstance(action, Response):
            self.counters.request(request, action.status)
            self._finish(conn, render(action))
            return
        assert not isinstance(caller, Response)
        try:
            self._carry_out(conn, action, caller)
        except StoreError as exc:
            self._finish(conn, render(error_response(503, f"the store cannot be read: {exc}")))
        self.counters.request(request, None)

    def _carry_out(self, conn: Connection, action: Action, caller: Caller) -> None:
        if isinstance(action, GetStatus):
            self._ask_status(conn, lambda reply: json_response(200, status_document(reply, self._errors(),
                                                                                    self._target_record())))
        elif isinstance(action, GetMetrics):
            self._ask_status(conn, lambda reply: metrics.render(reply, self.config, self.counters))
        elif isinstance(action, GetPlan):
            self._finish(conn, render(self._plan()))
        elif isinstance(action, PollNow):
            self.publish(target_messages.PollNow("local API"))
            self._finish(conn, render(json_response(202, {"message": "the agent polls its target state now"})))
        elif isinstance(action, ServiceCommand):
            self._finish(conn, render(self._service_command(action)))
        elif isinstance(action, GetLogs):
            self._logs(conn, action)
        elif isinstance(action, GetShadow):
            unsynced = self._unsynced(action.name)
            self._finish(conn, render(unsynced or json_response(200, self._shadow(action.name))))
        elif isinstance(action, PatchShadow):
            self._finish(conn, render(self._patch_shadow(action, caller)))

    def _ask_status(self, conn: Connection, answer: Callable[[runtime.StatusReply], Response]) -> None:
        self.waiting.append((conn, answer))
        if self.asked_at is None and self.supervisor is not None:
            self.asked_at = time.monotonic()
            self.send(self.supervisor, messages.encode(runtime.GetStatus()))

    def on_StatusReply(self, reply: runtime.StatusReply) -> None:
        waiting, self.waiting, self.asked_at = self.waiting, [], None
        for conn, answer in waiting:
            try:
                response = answer(reply)
            except StoreError as exc:
                response = error_response(503, f"the store cannot be read: {exc}")
            self._finish(conn, render(response))

    # -- what the store holds --------------------------------------------------------------------------------
    def _read(self, read: Callable[[Store], object], missing: object) -> object:
        try:
            with Store.open(self.config["store"]["path"], readonly=True) as store:
                return read(store)
        except StoreMissing:
            return missing

    def _errors(self) -> list:
        return self._read(lambda store: store.errors(), [])  # type: ignore[return-value]

    def _target_record(self) -> tuple[TargetRecord | None, TargetRejection | None]:
        return self._read(lambda store: (store.load_target(), store.last_target_rejection()),  # type: ignore[return-value]
                          (None, None))

    def _target(self):
        record = self._read(lambda store: store.load_target(), None)
        if record is None:
            return None
        try:
            return parse_target_state(record.document)  # type: ignore[attr-defined]
        except InvalidTargetState:
            return None

    def _app_keys(self) -> dict[str, str]:
        """The keys of the apps whose services opted in, from the target in force."""
        target = self._target()
        if target is None:
            return {}
        return {service_key(self.key, app_id): app_id for app_id in opted_in(target)}

    def _shadow(self, name: str) -> dict:
        thing = self.config["device"]["thing"]
        channel = channel_of(thing, name)

        def read(store: Store) -> tuple[ShadowState | None, dict | None, PendingReport | None]:
            return store.load_shadow(thing, name), store.load_accepted(channel), store.pending_report(channel)

        found: tuple[ShadowState | None, dict | None, PendingReport | None] = \
            self._read(read, (None, None, None))  # type: ignore[assignment]
        shadow, accepted, pending = found
        view = local_shadow(shadow.document if shadow else None, shadow.version if shadow else None, accepted,
                            pending.patch if pending is not None else None)
        # What this API answered moments ago may not be in the store yet (it travels through the listener to
        # persistence): it is shown, and is the base of the next PATCH, until the store holds it.
        recent = self.recent.setdefault(name, {})
        reported = view["state"]["reported"]
        for key in [k for k, value in recent.items() if stored_form(reported.get(k)) == value]:
            del recent[key]
        if recent:
            view = local_shadow(shadow.document if shadow else None, shadow.version if shadow else None, accepted,
                                pending.patch if pending is not None else None, recent)
        return {"thing": thing, "name": name, **view}

    def _unsynced(self, name: str) -> Response | None:
        if name in self.config["shadow"]["names"]:
            return None
        return error_response(404, f"the device does not sync shadow {name!r} (shadow.names)")

    def _patch_shadow(self, action: PatchShadow, caller: Caller) -> Response:
        if unsynced := self._unsynced(action.name):
            return unsynced
        # Sent as a handler's answer for the keys patched, each merged into what the device reports now (a
        # handler's answer is the whole truth for each of its top-level keys). Every PATCH answers under a name
        # of its own, so the listener never lets a later one supersede it while it is busy or restarting.
        current = self._shadow(action.name)["state"]["reported"]
        answer = merged_report(current, action.reported)
        self.recent[action.name].update(answer)
        self.patches += 1
        who = "operator" if not isinstance(caller, AppCaller) else f"app {caller.app_id}"
        self.publish(ShadowDeltaApplied(f"{HANDLER} ({who}) #{self.patches}", self.config["device"]["thing"],
                                        action.name, -1, answer, {}))
        return json_response(202, {"message": "accepted: merged into reported in the durable outbox, it reaches the "
                                              "cloud once online"})

    # -- the target's services -----------------------------------------------------------------------------
    def _service_command(self, action: ServiceCommand) -> Response:
        missing = self._unknown_service(action.app_id, action.service_name)
        if missing:
            return error_response(404, missing)
        reason = f"local API: {action.verb}"
        if action.verb == "restart":
            self.publish(target_messages.RestartServices(action.app_id, (action.service_name,), reason))
        else:
            self.publish(target_messages.HoldService(action.app_id, action.service_name, action.verb == "stop"))
        return json_response(202, {"message": f"{action.verb} of {action.app_id}/{action.service_name} requested"})

    def _unknown_service(self, app_id: str, service_name: str) -> str | None:
        target = self._target()
        app = next((a for a in target.apps if a.app_id == app_id), None) if target else None
        if app is None:
            return f"no app {app_id!r} in the target in force"
        if not any(service.service_name == service_name for service in app.services):
            return f"app {app_id!r} has no service {service_name!r}"
        return None

    def _logs(self, conn: Connection, action: GetLogs) -> None:
        missing = self._unknown_service(action.app_id, action.service_name)
        if missing:
            self._finish(conn, render(error_response(404, missing)))
            return
        self.connections.pop(conn.fileno(), None)
        self.streams.start(conn, action)

    def _plan(self) -> Response:
        from actors.cli.plan import PlanError, current_plan

        try:
            return json_response(200, current_plan(self.config))
        except (PlanError, ValueError) as exc:
            return error_response(503, str(exc))
