"""Store: the agent's embedded persistence, one SQLite file in WAL mode.

One writer process (the persistence actor) opens it read-write; other actor processes open it
read-only to recover their state after a restart. Every write is one IMMEDIATE transaction.
A Store is used from the thread that opened it.
"""
import functools
import os
from collections.abc import Callable
from typing import Concatenate, NamedTuple, ParamSpec, TypedDict, TypeVar

from peewee import EXCLUDED, SqliteDatabase, fn

from messages.protocol.json import JSONObject
from messages.protocol.patches import apply_patch, compose, diff
from store.db import open_database, translated_errors
from store.errors import StoreError
from store.models import bind_models
from store.values import (
    decode_json,
    decode_object,
    encode_json,
    encode_object,
    require_count,
    require_optional_text,
    require_text,
    require_timestamp,
)

_SINGLE_ROW = 1  # id of the one row in the target and target_rejection tables
MAX_PENDING_REPORTS = 8  # per channel: reports that cannot merge into one (see enqueue_report)
SEQ_KEY = "store.seq"  # the kv row holding the last store sequence number (migration 3 starts it)


class TargetRecord(NamedTuple):
    document: JSONObject
    etag: str | None
    received_at: float  # wall time, for people; which is newer is told by `seq`
    seq: int = 0  # the store's sequence number of the write: grows with every write, whatever the clock does


class TargetRejection(NamedTuple):
    etag: str | None
    reason: str
    at: float
    seq: int = 0


def newer_rejection(target: TargetRecord | None, rejection: TargetRejection | None) -> bool:
    """Whether the last rejected target came after the target in force (store order, not wall clocks)."""
    return rejection is not None and (target is None or rejection.seq > target.seq)


class PendingRestart(NamedTuple):
    app_id: str
    service_name: str
    reason: str


class ShadowState(NamedTuple):
    document: JSONObject
    version: int


class PendingReport(NamedTuple):
    report_id: int
    patch: JSONObject


class ErrorRecord(TypedDict):
    """One row of :meth:`Store.errors`."""
    source: str
    key: str
    message: str
    at: float
    since: float  # when it first appeared
    count: int  # how often it was recorded


_P = ParamSpec("_P")
_R = TypeVar("_R")
_StoreMethod = Callable[Concatenate["Store", _P], _R]


def _reads(method: _StoreMethod[_P, _R]) -> _StoreMethod[_P, _R]:
    @functools.wraps(method)
    def guarded(self: "Store", *args: _P.args, **kwargs: _P.kwargs) -> _R:
        self._require_open()
        with translated_errors(self.path, method.__name__):
            return method(self, *args, **kwargs)

    return guarded


def _writes(method: _StoreMethod[_P, _R]) -> _StoreMethod[_P, _R]:
    @functools.wraps(method)
    def in_transaction(self: "Store", *args: _P.args, **kwargs: _P.kwargs) -> _R:
        self._require_open()
        if self.readonly:
            raise StoreError(f"{method.__name__}: opened read-only; only the writer process writes", self.path)
        with translated_errors(self.path, method.__name__), self._db.atomic():
            return method(self, *args, **kwargs)

    return in_transaction


class Store:
    def __init__(self, db: SqliteDatabase, path: str, readonly: bool):
        """Use Store.open."""
        self._db = db
        self._models = bind_models(db)
        self.path = path
        self.readonly = readonly

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        readonly: bool = False,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
    ) -> "Store":
        """Open (the writer creates and migrates) the store, or raise StoreError saying why not.

        synchronous="NORMAL" is faster but may lose the last commits on power loss (never corrupts).
        busy_timeout: seconds to wait for another connection's lock before failing.
        """
        path = os.fspath(path)
        db = open_database(path, readonly=readonly, synchronous=synchronous, busy_timeout=busy_timeout)
        return cls(db, path, readonly)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _require_open(self) -> None:
        if self._db.is_closed():
            raise StoreError("store is closed (or used from another thread than the one that opened it)", self.path)

    # Target state

    def _next_seq(self) -> int:
        """The next store sequence number (inside the caller's write transaction)."""
        row = self._models.KeyValueRow.get_or_none(key=SEQ_KEY)
        last = None if row is None else decode_json(row.value)
        seq = (last if isinstance(last, int) else 0) + 1
        self._models.KeyValueRow.replace(key=SEQ_KEY, value=encode_json(seq, "seq")).execute()
        return seq

    @_writes
    def save_target(self, document: JSONObject, etag: str | None, received_at: float) -> int:
        """Store the target in force; its sequence number."""
        seq = self._next_seq()
        self._models.TargetRow.replace(
            id=_SINGLE_ROW,
            document=encode_object(document, "document"),
            etag=require_optional_text(etag, "etag"),
            received_at=require_timestamp(received_at, "received_at"),
            seq=seq,
        ).execute()
        return seq

    @_reads
    def load_target(self) -> TargetRecord | None:
        row = self._models.TargetRow.get_or_none()
        return None if row is None else TargetRecord(decode_object(row.document, "document"), row.etag, row.received_at,
                                                     row.seq)

    @_writes
    def record_target_rejection(self, etag: str | None, reason: str, at: float) -> int:
        """Record the last rejected target; its sequence number."""
        seq = self._next_seq()
        self._models.TargetRejectionRow.replace(
            id=_SINGLE_ROW,
            etag=require_optional_text(etag, "etag"),
            reason=require_text(reason, "reason"),
            at=require_timestamp(at, "at"),
            seq=seq,
        ).execute()
        return seq

    @_reads
    def last_target_rejection(self) -> TargetRejection | None:
        row = self._models.TargetRejectionRow.get_or_none()
        return None if row is None else TargetRejection(row.etag, row.reason, row.at, row.seq)

    # Restarts asked for (RestartServices), kept until the reconciler has carried them out

    @_writes
    def add_restarts(self, app_id: str, services: tuple[str, ...], reason: str) -> None:
        restart = self._models.PendingRestartRow
        for service_name in services:
            restart.replace(app_id=require_text(app_id, "app_id", allow_empty=True),
                            service_name=require_text(service_name, "service_name"),
                            reason=require_text(reason, "reason"), seq=self._next_seq()).execute()

    @_writes
    def clear_restart(self, app_id: str, service_name: str) -> None:
        restart = self._models.PendingRestartRow
        restart.delete().where((restart.app_id == app_id) & (restart.service_name == service_name)).execute()

    @_reads
    def pending_restarts(self) -> list[PendingRestart]:
        restart = self._models.PendingRestartRow
        return [PendingRestart(row.app_id, row.service_name, row.reason)
                for row in restart.select().order_by(restart.seq)]

    # Shadows (name "" is the classic shadow)

    @_writes
    def save_shadow(self, thing: str, name: str, document: JSONObject, version: int) -> bool:
        """Store the shadow unless the stored one has a higher version; True if stored."""
        shadow = self._models.ShadowRow
        insert = shadow.insert(
            thing=require_text(thing, "thing"),
            name=require_text(name, "name", allow_empty=True),
            document=encode_object(document, "document"),
            version=require_count(version, "version"),
        )
        # Versions may arrive out of order: only a strictly lower one is stale.
        upsert = insert.on_conflict(
            conflict_target=[shadow.thing, shadow.name],
            update={shadow.document: EXCLUDED.document, shadow.version: EXCLUDED.version},
            where=EXCLUDED.version >= shadow.version,
        )
        return upsert.as_rowcount().execute() > 0

    @_reads
    def load_shadow(self, thing: str, name: str) -> ShadowState | None:
        shadow = self._models.ShadowRow
        row = shadow.get_or_none((shadow.thing == thing) & (shadow.name == name))
        return None if row is None else ShadowState(decode_object(row.document, "document"), row.version)

    # Outbox: reports that must survive a restart, one queue per channel

    @_writes
    def enqueue_report(self, channel: str, patch: JSONObject) -> int | None:
        """Merge `patch` into the channel's newest pending report; the id now holding it.

        A merge gives the report a new id, so an ack of what was sent before does not drop the
        merged data. When the merge cannot be one patch (see messages.protocol.patches), the patch is
        queued as a separate report after it. After a merge, earlier reports that now compose with it are
        merged too, so a key flipping between an object and null keeps two reports, not one per flip;
        past MAX_PENDING_REPORTS (several keys flipping in turn), every report after the oldest is replaced
        by the one patch that brings the accepted state, with the oldest applied, to the newest: newest
        wins. An empty patch with nothing pending queues nothing.
        """
        outbox = self._models.OutboxRow
        channel = require_text(channel, "channel")
        patch_text = encode_object(patch, "patch")
        rows = list(outbox.select().where(outbox.channel == channel).order_by(outbox.report_id))
        if not rows:
            return outbox.insert(channel=channel, patch=patch_text).execute() if patch else None
        patches = [decode_object(row.patch, "patch") for row in rows]
        merged = compose(patches[-1], patch)
        if merged is None:
            if len(rows) < MAX_PENDING_REPORTS:
                return outbox.insert(channel=channel, patch=patch_text).execute()
            accepted = self.load_accepted(channel) or {}
            base = apply_patch(accepted, patches[0])
            merged = diff(base, apply_patch(functools.reduce(apply_patch, patches[1:], base), patch))
            first = 1
        else:
            first = len(rows) - 1
            while first > 0 and (folded := compose(patches[first - 1], merged)) is not None:
                merged, first = folded, first - 1
        merged_text = encode_json(merged, "patch")
        if first == len(rows) - 1 and merged_text == rows[-1].patch:
            return rows[-1].report_id
        outbox.delete().where((outbox.channel == channel)
                              & (outbox.report_id >= rows[first].report_id)).execute()
        if not merged and first > 0:
            return rows[first - 1].report_id
        return outbox.insert(channel=channel, patch=merged_text).execute()

    @_reads
    def pending_report(self, channel: str) -> PendingReport | None:
        """The channel's oldest unacknowledged report: send this one next."""
        outbox = self._models.OutboxRow
        row = outbox.select().where(outbox.channel == channel).order_by(outbox.report_id).first()
        return None if row is None else PendingReport(row.report_id, decode_object(row.patch, "patch"))

    @_writes
    def ack_report(self, channel: str, report_id: int) -> bool:
        """Drop the report if it still has this id; False when it was merged into a newer one."""
        outbox = self._models.OutboxRow
        deleted = outbox.delete().where((outbox.channel == channel) & (outbox.report_id == report_id))
        return deleted.execute() > 0

    @_reads
    def pending_channels(self) -> list[str]:
        outbox = self._models.OutboxRow
        return [row.channel for row in outbox.select(outbox.channel).distinct().order_by(outbox.channel)]

    @_reads
    def outbox_depth(self) -> dict[str, int]:
        """Unacknowledged reports per channel (the metrics' outbox depth)."""
        outbox = self._models.OutboxRow
        count = fn.COUNT(outbox.report_id)
        rows = outbox.select(outbox.channel, count.alias("n")).group_by(outbox.channel)
        return {row.channel: row.n for row in rows}

    # Last state the receiver accepted, per channel

    @_writes
    def save_accepted(self, channel: str, state: JSONObject) -> None:
        self._models.AcceptedStateRow.replace(
            channel=require_text(channel, "channel"), state=encode_object(state, "state")
        ).execute()

    @_reads
    def load_accepted(self, channel: str) -> JSONObject | None:
        row = self._models.AcceptedStateRow.get_or_none(channel=channel)
        return None if row is None else decode_object(row.state, "state")

    # Errors and reasons, for status

    @_writes
    def record_error(self, source: str, key: str, message: str, at: float) -> None:
        """Record or refresh an error; `since` keeps when it first appeared, `count` how often."""
        error = self._models.ErrorRow
        at = require_timestamp(at, "at")
        error.insert(
            source=require_text(source, "source"),
            key=require_text(key, "key", allow_empty=True),
            message=require_text(message, "message"),
            at=at,
            since=at,
            count=1,
        ).on_conflict(
            conflict_target=[error.source, error.key],
            update={error.message: EXCLUDED.message, error.at: EXCLUDED.at, error.count: error.count + 1},
        ).execute()

    @_writes
    def clear_error(self, source: str, key: str) -> bool:
        error = self._models.ErrorRow
        return error.delete().where((error.source == source) & (error.key == key)).execute() > 0

    @_reads
    def errors(self) -> list[ErrorRecord]:
        """[{source, key, message, at, since, count}] ordered by source then key."""
        error = self._models.ErrorRow
        return list(error.select().order_by(error.source, error.key).dicts())

    # Small key/value bookkeeping for actors

    @_writes
    def put(self, key: str, value: object) -> None:
        key_value = self._models.KeyValueRow
        key_value.replace(key=require_text(key, "key"), value=encode_json(value, "value")).execute()

    @_reads
    def get(self, key: str, default: object = None) -> object:
        row = self._models.KeyValueRow.get_or_none(key=key)
        return default if row is None else decode_json(row.value)
