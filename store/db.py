"""Opening the SQLite file: refuse anything that is not a sound Fleetlet store, then migrate.

Nothing is written to a file before it has passed the header check and `PRAGMA quick_check`, so a
corrupt or foreign file is left exactly as it was for someone to inspect.
"""
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import peewee
from peewee import SqliteDatabase

from store.errors import (
    StoreCorrupt,
    StoreError,
    StoreFull,
    StoreMissing,
    StoreTooNew,
    StoreValueError,
)
from store.migrations import SCHEMA_VERSION, upgrade

SQLITE_HEADER = b"SQLite format 3\x00"
# Stamped in the file header so another program's database is never taken for ours.
APPLICATION_ID = 0x464C544C  # "FLTL"
SYNCHRONOUS_MODES = ("FULL", "NORMAL")
_CORRUPTION_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


@contextmanager
def translated_errors(path: str, doing: str) -> Iterator[None]:
    """Turn peewee/sqlite3 exceptions into StoreError (StoreCorrupt when SQLite says so)."""
    try:
        yield
    except (peewee.PeeweeException, sqlite3.Error) as exc:
        cause = _first_cause(exc)
        code = getattr(cause, "sqlite_errorcode", 0) & 0xFF
        kind = StoreCorrupt if code in _CORRUPTION_CODES else StoreFull if code == sqlite3.SQLITE_FULL else StoreError
        raise kind(f"{doing} failed: {cause}", path) from exc


def _first_cause(exc: BaseException) -> BaseException:
    """The sqlite3 error that started it: peewee keeps it as ``orig``, and SQLite rolls a transaction back
    by itself on some errors (SQLITE_FULL), so peewee's own rollback then fails with "no transaction is
    active" while handling the real error, which is that one's context."""
    seen: BaseException | None = exc
    first = exc
    while seen is not None:
        cause = getattr(seen, "orig", seen)
        if getattr(cause, "sqlite_errorcode", 0):
            first = cause
        seen = seen.__context__
    return getattr(first, "orig", first)


def open_database(path: str, *, readonly: bool, synchronous: str, busy_timeout: float) -> SqliteDatabase:
    if synchronous not in SYNCHRONOUS_MODES:
        raise StoreValueError(f"synchronous: expected one of {SYNCHRONOUS_MODES}, got {synchronous!r}")
    if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)) or busy_timeout < 0:
        raise StoreValueError(f"busy_timeout: expected seconds >= 0, got {busy_timeout!r}")
    _check_file(path, readonly)
    db = SqliteDatabase(
        _uri(path, readonly),
        uri=True,
        timeout=busy_timeout,
        pragmas=[("synchronous", synchronous)],
        lock_type="IMMEDIATE",
        autoconnect=False,
    )
    try:
        with translated_errors(path, "open"):
            db.connect()
            _quick_check(db, path)
            _check_schema(db, path, readonly=readonly)
            if not readonly:
                _enable_wal(db, path)
                with db.atomic():  # IMMEDIATE; check again: another writer may have migrated meanwhile
                    version = _check_schema(db, path, readonly=False)
                    if version == 0:
                        db.pragma("application_id", APPLICATION_ID)
                    upgrade(db, version)
    except BaseException:
        db.close()
        raise
    return db


def _check_file(path: str, readonly: bool) -> None:
    file = Path(path)
    if not file.exists():
        if readonly:
            raise StoreMissing("does not exist (the writer has not created it yet)", path)
        return
    if not file.is_file():
        raise StoreError("is not a regular file", path)
    with file.open("rb") as stream:
        header = stream.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        raise StoreCorrupt(f"not a SQLite database (header {header[:16]!r})", path)


def _uri(path: str, readonly: bool) -> str:
    mode = "ro" if readonly else "rwc"
    return f"file:{quote(os.path.abspath(path))}?mode={mode}"


def _quick_check(db: SqliteDatabase, path: str) -> None:
    problems = [row[0] for row in db.execute_sql("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        raise StoreCorrupt("PRAGMA quick_check failed: " + "; ".join(problems[:5]), path)


def _enable_wal(db: SqliteDatabase, path: str) -> None:
    mode = db.pragma("journal_mode", "wal")
    if mode != "wal":
        raise StoreError(f"cannot use WAL journal mode (SQLite kept {mode!r})", path)


def _check_schema(db: SqliteDatabase, path: str, *, readonly: bool) -> int:
    """The schema version this file is at, if this code may use it."""
    application_id = db.pragma("application_id")
    version = db.pragma("user_version")
    if application_id == 0 and version == 0:
        if db.get_tables():
            raise StoreError("has tables but no Fleetlet schema: not a Fleetlet store", path)
        if readonly:
            raise StoreMissing("is not initialised yet (the writer creates the schema)", path)
        return 0
    if application_id != APPLICATION_ID:
        raise StoreError(f"application_id {application_id:#x} is not Fleetlet's: not a Fleetlet store", path)
    if version > SCHEMA_VERSION:
        raise StoreTooNew(
            f"schema version {version} is newer than {SCHEMA_VERSION}, the newest this code knows", path
        )
    if readonly and version < SCHEMA_VERSION:
        raise StoreError(
            f"schema version {version} is older than {SCHEMA_VERSION}; the writer upgrades it at open", path
        )
    return version
