"""The cloud's storage operations: devices, shadows, target states and device reports.

Blocking calls, made from worker threads (each with its own connection). Read-modify-write goes through
:meth:`CloudStore._optimistic`: read the row, compute, then write it only if its ``revision`` is still
the one read; otherwise read again and recompute. No lock is held between the read and the write.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import threading
from typing import Callable, TypeVar

import peewee

from cloud.db import DeviceReportTable, DeviceStateTable, DeviceTable, ShadowTable, TargetStateTable
from cloud.documents import strong_etag, token_digest
from messages.protocol.json import canonical_text
from messages.protocol.patches import apply_patch

T = TypeVar("T")
MAX_ATTEMPTS = 100  # conflicting writes in a row before a request gives up (500)


class CloudStoreError(Exception):
    """The database failed or stayed contended; the request may be retried."""


class _Conflict(Exception):
    """Another writer changed the row between our read and our write."""


@dataclasses.dataclass(frozen=True)
class DeviceRecord:
    uuid: str
    thing: str


@dataclasses.dataclass(frozen=True)
class StoredShadow:
    """A shadow as stored: ``document`` None when it does not exist (``version``: the last one it had)."""

    document: dict | None
    version: int


@dataclasses.dataclass(frozen=True)
class StoredTarget:
    document: dict
    etag: str


@dataclasses.dataclass(frozen=True)
class StoredDeviceState:
    state: dict
    updated_at: int


def _translated(method):
    """Database failures leave as CloudStoreError; the broken connection is dropped so the next call reconnects."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except peewee.PeeweeException as exc:
            self._database.close()
            raise CloudStoreError(f"{method.__name__} failed: {exc}") from exc

    return wrapper


class CloudStore:
    def __init__(self, database: peewee.Database):
        self._database = database
        # SQLite takes one writer at a time anyway; letting our own threads queue here, rather than in
        # SQLite's busy handler (which sleeps up to 100 ms between tries), keeps latency low. Other
        # processes are still kept apart by the revision check alone.
        is_sqlite = isinstance(database, peewee.SqliteDatabase)
        self._writer = threading.Lock() if is_sqlite else contextlib.nullcontext()

    def close(self) -> None:
        """Close the calling thread's connection."""
        if not self._database.is_closed():
            self._database.close()

    # --- devices -----------------------------------------------------------------------------------------

    @_translated
    def register_device(self, uuid: str, thing: str, token: str) -> bool:
        """Create or replace a device; True if it is new. A token already held by another device is refused."""
        digest = token_digest(token)
        with self._database.atomic():
            holder = DeviceTable.get_or_none(DeviceTable.token_sha256 == digest)
            if holder is not None and holder.uuid != uuid:
                raise ValueError("this token is already another device's")
            created = DeviceTable.get_or_none(DeviceTable.uuid == uuid) is None
            DeviceTable.insert(uuid=uuid, thing=thing, token_sha256=digest).on_conflict(
                conflict_target=[DeviceTable.uuid],
                update={DeviceTable.thing: thing, DeviceTable.token_sha256: digest}).execute()
        return created

    @_translated
    def device_for_token(self, token: str) -> DeviceRecord | None:
        row = DeviceTable.get_or_none(DeviceTable.token_sha256 == token_digest(token))
        return None if row is None else DeviceRecord(row.uuid, row.thing)

    @_translated
    def device(self, uuid: str) -> DeviceRecord | None:
        row = DeviceTable.get_or_none(DeviceTable.uuid == uuid)
        return None if row is None else DeviceRecord(row.uuid, row.thing)

    @_translated
    def thing_registered(self, thing: str) -> bool:
        """Whether a registered device has this thing name (its shadows may be served over MQTT)."""
        return DeviceTable.select().where(DeviceTable.thing == thing).exists()

    # --- shadows -----------------------------------------------------------------------------------------

    @_translated
    def read_shadow(self, thing: str, name: str) -> StoredShadow:
        row = self._shadow_row(thing, name)
        return _stored_shadow(row)

    @_translated
    def change_shadow(self, thing: str, name: str, now: int,
                      change: Callable[[StoredShadow], tuple[dict | None, T]]) -> T:
        """Apply ``change`` (current -> (new document or None to delete, result)) and return its result.

        ``change`` may run several times, on fresh reads, when other writers get in between; what it
        raises (a ShadowError) is passed on and nothing is written.
        """
        def attempt() -> T:
            row = self._shadow_row(thing, name)
            current = _stored_shadow(row)
            document, result = change(current)
            version = document["version"] if document is not None else current.version
            self._write(ShadowTable, row, (ShadowTable.thing == thing) & (ShadowTable.name == name),
                        key={"thing": thing, "name": name},
                        values={"document": None if document is None else _dump(document),
                                "version": version, "updated_at": now})
            return result

        return self._optimistic(attempt)

    @staticmethod
    def _shadow_row(thing: str, name: str):
        return ShadowTable.get_or_none((ShadowTable.thing == thing) & (ShadowTable.name == name))

    # --- target states -----------------------------------------------------------------------------------

    @_translated
    def target_state(self, uuid: str) -> StoredTarget | None:
        row = TargetStateTable.get_or_none(TargetStateTable.uuid == uuid)
        return None if row is None else StoredTarget(json.loads(row.document), row.etag)

    @_translated
    def set_target_state(self, uuid: str, document: dict, now: int) -> tuple[str, bool]:
        """Store ``document`` (already validated and canonical) as ``uuid``'s target: (etag, changed)."""
        text = canonical_text(document)
        etag = strong_etag(text)

        def attempt() -> tuple[str, bool]:
            row = TargetStateTable.get_or_none(TargetStateTable.uuid == uuid)
            if row is not None and row.etag == etag:
                return etag, False
            self._write(TargetStateTable, row, TargetStateTable.uuid == uuid, key={"uuid": uuid},
                        values={"document": text, "etag": etag, "updated_at": now})
            return etag, True

        return self._optimistic(attempt)

    # --- device reports ----------------------------------------------------------------------------------

    @_translated
    def apply_report(self, uuid: str, report: dict, now: int) -> dict:
        """Merge one device's report into its latest state and keep the report; returns the merged state."""
        def attempt() -> dict:
            with self._database.atomic():
                row = DeviceStateTable.get_or_none(DeviceStateTable.uuid == uuid)
                state = apply_patch(json.loads(row.state) if row is not None else {}, report)
                self._write(DeviceStateTable, row, DeviceStateTable.uuid == uuid, key={"uuid": uuid},
                            values={"state": _dump(state), "updated_at": now})
                DeviceReportTable.create(uuid=uuid, body=_dump(report), received_at=now)
            return state

        return self._optimistic(attempt)

    @_translated
    def device_state(self, uuid: str) -> StoredDeviceState | None:
        row = DeviceStateTable.get_or_none(DeviceStateTable.uuid == uuid)
        return None if row is None else StoredDeviceState(json.loads(row.state), row.updated_at)

    @_translated
    def report_count(self, uuid: str) -> int:
        return DeviceReportTable.select().where(DeviceReportTable.uuid == uuid).count()

    # --- optimistic writes -------------------------------------------------------------------------------

    def _write(self, model, row, match, key: dict, values: dict) -> None:
        """Insert the row (``row`` None) or update it if its revision is still ``row.revision``."""
        if row is None:
            try:
                with self._database.atomic():  # a savepoint when nested: a failed insert spoils nothing
                    model.insert(**key, **values, revision=1).execute()
            except peewee.IntegrityError:
                raise _Conflict from None
            return
        changed = model.update(**values, revision=row.revision + 1).where(
            match & (model.revision == row.revision)).execute()
        if changed != 1:
            raise _Conflict

    def _optimistic(self, attempt: Callable[[], T]) -> T:
        for _ in range(MAX_ATTEMPTS):
            try:
                with self._writer:
                    return attempt()
            except _Conflict:
                continue
        raise CloudStoreError(f"gave up after {MAX_ATTEMPTS} conflicting concurrent writes")


def _stored_shadow(row) -> StoredShadow:
    if row is None:
        return StoredShadow(None, 0)
    return StoredShadow(None if row.document is None else json.loads(row.document), row.version)


def _dump(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
