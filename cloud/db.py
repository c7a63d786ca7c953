"""The cloud's database: ``store.url`` parsing, the peewee models, and opening SQLite or PostgreSQL.

Every row that concurrent writers may change carries a ``revision``: a writer updates it with
``UPDATE ... WHERE revision = <the one it read>`` and, when no row matched, reads again and retries.
That is what keeps two updates of one shadow from losing one another, across threads and processes.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

import peewee

# Query parameters handed to psycopg2 for a postgresql:// URL; anything else is refused.
POSTGRES_OPTIONS = ("connect_timeout", "sslmode", "application_name")
POSTGRES_DEFAULT_CONNECT_TIMEOUT = "5"
SQLITE_BUSY_TIMEOUT = 10.0  # seconds a writer waits for another one's lock


class StoreUrlError(ValueError):
    """``store.url`` cannot be used; the text says why."""


@dataclasses.dataclass(frozen=True)
class StoreLocation:
    """Where the store lives: ``kind`` "sqlite" with a file ``path``, or "postgresql" with ``params``."""

    kind: str
    path: str = ""
    params: tuple[tuple[str, str | int], ...] = ()

    def describe(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite {self.path}"
        params = dict(self.params)  # never the password: this goes to logs
        return f"postgresql {params.get('user', '')}@{params['host']}:{params['port']}/{params['database']}"


def parse_store_url(url: str) -> StoreLocation:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``postgresql://user:pw@host:port/db?...``."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        if parts.netloc or parts.query or not parts.path.startswith("/"):
            raise StoreUrlError(f"{url!r}: expected sqlite:///relative/path or sqlite:////absolute/path")
        path = unquote(parts.path[1:])
        if path in ("", ":memory:") or path.endswith("/"):
            raise StoreUrlError(f"{url!r}: a database file path is needed")
        return StoreLocation("sqlite", path=path)
    if parts.scheme in ("postgresql", "postgres"):
        return StoreLocation("postgresql", params=_postgres_params(url, parts))
    raise StoreUrlError(f"{url!r}: the scheme must be sqlite or postgresql")


def _postgres_params(url: str, parts: SplitResult) -> tuple[tuple[str, str | int], ...]:
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise StoreUrlError(f"{url!r}: name one database, as postgresql://user@host:port/database")
    try:
        port = parts.port
    except ValueError:
        raise StoreUrlError(f"{url!r}: the port is not a number in 1..65535") from None
    params: dict[str, str | int] = {"database": database, "host": parts.hostname or "127.0.0.1",
                                    "port": port or 5432, "connect_timeout": POSTGRES_DEFAULT_CONNECT_TIMEOUT}
    if parts.username:
        params["user"] = unquote(parts.username)
    if parts.password:
        params["password"] = unquote(parts.password)
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)):
        if key not in POSTGRES_OPTIONS:
            raise StoreUrlError(f"{url!r}: unknown option {key!r}; accepted: {', '.join(POSTGRES_OPTIONS)}")
        params[key] = value
    return tuple(sorted(params.items()))


# --- models ------------------------------------------------------------------------------------------

class CloudModel(peewee.Model):
    """Table names are pinned: they are the stored schema, whatever the classes are called."""

    class Meta:
        database = None  # bound by open_store


class DeviceTable(CloudModel):
    uuid = peewee.CharField(primary_key=True, max_length=128)
    thing = peewee.CharField(max_length=128, index=True)
    token_sha256 = peewee.CharField(max_length=64, unique=True)  # the token itself is never stored

    class Meta:
        table_name = "device"


class ShadowTable(CloudModel):
    thing = peewee.CharField(max_length=128)
    name = peewee.CharField(max_length=64)  # "" for the classic shadow
    document = peewee.TextField(null=True)  # JSON; NULL once deleted
    version = peewee.BigIntegerField()  # of the document, or the last one of a deleted shadow
    revision = peewee.BigIntegerField()
    updated_at = peewee.BigIntegerField()

    class Meta:
        table_name = "shadow"
        indexes = ((("thing", "name"), True),)


class TargetStateTable(CloudModel):
    uuid = peewee.CharField(primary_key=True, max_length=128)
    document = peewee.TextField()  # canonical JSON
    etag = peewee.CharField(max_length=80)
    revision = peewee.BigIntegerField()
    updated_at = peewee.BigIntegerField()

    class Meta:
        table_name = "targetstate"


class DeviceStateTable(CloudModel):
    """The latest state a device reported: every report merged in."""

    uuid = peewee.CharField(primary_key=True, max_length=128)
    state = peewee.TextField()
    revision = peewee.BigIntegerField()
    updated_at = peewee.BigIntegerField()

    class Meta:
        table_name = "devicestate"


class DeviceReportTable(CloudModel):
    """Each accepted report as received, for history."""

    id = peewee.BigAutoField()
    uuid = peewee.CharField(max_length=128, index=True)
    body = peewee.TextField()
    received_at = peewee.BigIntegerField()

    class Meta:
        table_name = "devicereport"


MODELS = (DeviceTable, ShadowTable, TargetStateTable, DeviceStateTable, DeviceReportTable)


def open_store(location: StoreLocation) -> peewee.Database:
    """Open the database, bind the models to it and create missing tables.

    Connections are per thread (peewee's default): each worker thread keeps its own.
    """
    database: peewee.Database
    if location.kind == "sqlite":
        directory = pathlib.Path(location.path).parent
        directory.mkdir(parents=True, exist_ok=True)
        # WAL + synchronous=FULL: an accepted update survives a crash or power loss; IMMEDIATE makes a
        # transaction take the write lock when it begins, so concurrent writers wait instead of failing.
        database = peewee.SqliteDatabase(os.path.abspath(location.path), timeout=SQLITE_BUSY_TIMEOUT,
                                         lock_type="IMMEDIATE",
                                         pragmas=[("journal_mode", "wal"), ("synchronous", "full")])
    else:
        params = dict(location.params)
        name = params.pop("database")
        if not isinstance(name, str):
            raise StoreUrlError(f"the database name must be text, got {name!r}")
        # The stub matches **params against PostgresqlDatabase's own keywords; the keys are POSTGRES_OPTIONS
        # and the connection fields (_postgres_params), none of which it names: all go on to psycopg2.
        database = peewee.PostgresqlDatabase(name, **params)  # type: ignore[arg-type]
    database.bind(MODELS)
    with database.connection_context():
        database.create_tables(MODELS, safe=True)
    return database
