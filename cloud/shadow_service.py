"""The shadow service: get / update / delete of classic and named shadows, as AWS IoT answers them.

A request comes from MQTT (a topic of the ``aws`` or ``emqx`` profile) or from HTTP (no profile). It is
parsed, admitted (at most ``max_queued`` per thing, else 429), run in order with the other requests of
its thing (the database work in a worker thread), and its outcome published with QoS 1:

- a rejection or a ``get`` answer goes to the requester's profile only (HTTP gets it in the response);
- what changes a shadow (update/accepted, update/delta, update/documents, delete/accepted) goes to every
  profile that can see the shadow: both for the classic shadow, ``aws`` for a named one. One shadow, two
  topic namespaces, so that an update made over HTTP or one profile reaches a device on the other.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from concurrent.futures import Executor
from typing import Callable

from cloud.shadow_algebra import (
    Limits,
    apply_update,
    delete_document,
    error_payload,
    get_accepted,
    internal_failure,
    parse_request,
    shadow_not_found,
    too_many_requests,
)
from cloud.store import CloudStore, CloudStoreError
from messages.protocol.shadow_document import ShadowError
from messages.protocol.shadow_topics import (
    CLASSIC_SHADOW,
    parse_shadow_topic,
    shadow_topics,
    validate_shadow_name,
    validate_thing_name,
)

REQUEST_OPERATIONS = ("get", "update", "delete")
PROFILES = ("aws", "emqx")
log = logging.getLogger("fleetlet.cloud.shadow")


@dataclasses.dataclass(frozen=True)
class ShadowAddress:
    thing_name: str
    shadow_name: str = CLASSIC_SHADOW

    @property
    def label(self) -> str:
        """The name AWS puts in a 404: the shadow's, or the thing's for the classic shadow."""
        return self.shadow_name or self.thing_name

    @property
    def profiles(self) -> tuple[str, ...]:
        return PROFILES if self.shadow_name == CLASSIC_SHADOW else ("aws",)


@dataclasses.dataclass(frozen=True)
class ShadowResult:
    """``code`` 200 with the accepted payload as ``body``, or an error code with the error payload."""

    code: int
    body: dict
    publications: tuple[tuple[str, dict], ...]


@dataclasses.dataclass(frozen=True)
class _Accepted:
    reply: dict
    delta: dict | None = None
    documents: dict | None = None


def subscription_topics() -> list[str]:
    """Every request topic, one pattern each (a bare ``#`` would not match ``$`` topics)."""
    return [topic for operation in REQUEST_OPERATIONS for topic in (
        f"$aws/things/+/shadow/{operation}",
        f"$aws/things/+/shadow/name/+/{operation}",
        f"$emqx/things/+/shadow/{operation}")]


def route(topic: str) -> tuple[str, ShadowAddress, str]:
    """``(profile, address, operation)`` of a request topic; ShadowError 400 naming the bad part."""
    parsed = parse_shadow_topic(topic)
    if parsed is not None and parsed[3] in REQUEST_OPERATIONS:
        profile, thing, name, operation = parsed
        return profile, ShadowAddress(thing, name), operation
    parts = topic.split("/")
    if len(parts) in (5, 7):  # the shape of our subscriptions: then a name is what is wrong
        validate_thing_name(parts[2])
        if len(parts) == 7:
            validate_shadow_name(parts[5])
    raise ShadowError(400, "Unsupported topic")


def accepted_publications(address: ShadowAddress, operation: str, origin: str | None,
                          accepted: _Accepted) -> tuple[tuple[str, dict], ...]:
    if operation == "get":
        return () if origin is None else ((shadow_topics(origin, address.thing_name, address.shadow_name).get_accepted,
                                           accepted.reply),)
    views = [shadow_topics(profile, address.thing_name, address.shadow_name) for profile in address.profiles]
    if operation == "delete":
        return tuple((topics.delete_accepted, accepted.reply) for topics in views)
    publications = [(topics.update_accepted, accepted.reply) for topics in views]
    if accepted.delta is not None:
        publications += [(topics.update_delta, accepted.delta) for topics in views]
    if accepted.documents is not None:
        publications += [(topics.update_documents, accepted.documents) for topics in views]
    return tuple(publications)


def rejected_publications(address: ShadowAddress, operation: str, origin: str | None,
                          payload: dict) -> tuple[tuple[str, dict], ...]:
    if origin is None:
        return ()
    topics = shadow_topics(origin, address.thing_name, address.shadow_name)
    return ((getattr(topics, f"{operation}_rejected"), payload),)


def perform(store: CloudStore, address: ShadowAddress, operation: str, request: dict, now: int,
            limits: Limits) -> _Accepted:
    """Run one parsed request against the store (blocking); ShadowError when AWS would reject it."""
    token = request.get("clientToken")
    if operation == "get":
        document = store.read_shadow(address.thing_name, address.shadow_name).document
        if document is None:
            err = shadow_not_found(address.label)
            raise ShadowError(err.code, err.message, token)
        return _Accepted(get_accepted(document, token, now))
    if operation == "update":
        def update(current):
            outcome = apply_update(current.document, request, now, limits, deleted_version=current.version)
            return outcome.document, outcome

        outcome = store.change_shadow(address.thing_name, address.shadow_name, now, update)
        return _Accepted(outcome.accepted, outcome.delta, outcome.documents)
    def delete(current):
        return None, delete_document(current.document, request, now, address.label)

    return _Accepted(store.change_shadow(address.thing_name, address.shadow_name, now, delete))


@dataclasses.dataclass
class _ThingQueue:
    """The requests of one thing under way (queued or running), and the lock that runs them in order."""

    pending: int = 0
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)


class ShadowService:
    """Admits, orders and runs shadow requests; ``publish(topic, payload)`` sends its messages."""

    def __init__(self, store: CloudStore, executor: Executor, publish: Callable[[str, bytes], None],
                 limits: Limits, max_queued: int, clock: Callable[[], float]):
        self._store = store
        self._executor = executor
        self._publish = publish
        self._limits = limits
        self._max_queued = max_queued
        self._clock = clock
        self._queues: dict[str, _ThingQueue] = {}
        self._tasks: set[asyncio.Task] = set()

    def on_mqtt_request(self, topic: str, payload: bytes) -> None:
        """A message on a request topic (in the loop): answer it, never raise."""
        try:
            profile, address, operation = route(topic)
        except ShadowError as err:
            self._emit(((f"{topic}/rejected", error_payload(err, None, self._now())),))
            return
        task = asyncio.get_running_loop().create_task(self.execute(address, operation, payload, profile))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for the MQTT requests under way to be answered."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def execute(self, address: ShadowAddress, operation: str, payload: bytes,
                      origin: str | None) -> ShadowResult | None:
        """Run one request from ``origin`` (a profile, or None for HTTP); publish and return its outcome. None:
        an MQTT request for a thing no registered device has, ignored (see :meth:`_unregistered`)."""
        try:
            request = parse_request(payload, self._limits, require_state=operation == "update")
        except ShadowError as err:
            return None if await self._unregistered(address, operation, origin) else \
                self._reject(address, operation, origin, err, None)
        queue = self._queues.setdefault(address.thing_name, _ThingQueue())
        if queue.pending >= self._max_queued:
            return None if await self._unregistered(address, operation, origin) else \
                self._reject(address, operation, origin, too_many_requests(), request)
        queue.pending += 1
        try:
            async with queue.lock:  # FIFO: one thing's requests run in arrival order (the check too)
                if await self._unregistered(address, operation, origin):
                    return None
                return await self._run(address, operation, request, origin)
        finally:
            queue.pending -= 1
            if queue.pending == 0:
                del self._queues[address.thing_name]

    async def _run(self, address, operation, request, origin) -> ShadowResult:
        loop = asyncio.get_running_loop()
        try:
            accepted = await loop.run_in_executor(self._executor, perform, self._store, address, operation,
                                                  request, self._now(), self._limits)
        except ShadowError as err:
            return self._reject(address, operation, origin, err, request)
        except CloudStoreError as exc:
            log.error("%s of %s failed: %s", operation, address, exc)
            return self._reject(address, operation, origin, internal_failure(), request)
        except Exception:  # noqa: BLE001 - a bug must cost one request a 500, never the service
            log.exception("%s of %s failed", operation, address)
            return self._reject(address, operation, origin, internal_failure(), request)
        publications = accepted_publications(address, operation, origin, accepted)
        self._emit(publications)
        return ShadowResult(200, accepted.reply, publications)

    async def _unregistered(self, address: ShadowAddress, operation: str, origin: str | None) -> bool:
        """An MQTT request for a thing that no registered device has is ignored, without an answer. AWS IoT
        never lets one reach the shadow service: the policy bound to the client's certificate refuses the
        publish, and the client gets no answer but a closed connection. Answering would create a shadow for
        a name nobody registered, and tell whoever asks which names are registered. Looked up each time: a
        registration may change a device's thing name. HTTP requests are authorised by their token instead."""
        if origin is None:
            return False
        try:
            registered = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._store.thing_registered, address.thing_name)
        except CloudStoreError as exc:
            log.warning("ignored %s %s for %s: cannot check its registration: %s", origin, operation,
                        address.thing_name, exc)
            return True
        if not registered:
            log.info("ignored %s %s for %s: no registered device has that thing name", origin, operation,
                     address.thing_name)
        return not registered

    def _reject(self, address, operation, origin, err: ShadowError, request: dict | None) -> ShadowResult:
        token = None if request is None else request.get("clientToken")
        payload = error_payload(err, token, self._now())
        publications = rejected_publications(address, operation, origin, payload)
        self._emit(publications)
        return ShadowResult(err.code, payload, publications)

    def _emit(self, publications) -> None:
        for topic, payload in publications:
            self._publish(topic, json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))

    def _now(self) -> int:
        return int(self._clock())
