"""The schema's history: an ordered list of migrations, migration N producing schema version N.

The version lives in `PRAGMA user_version`. Each migration is frozen DDL, independent of
models.py (which describes only the latest version); append, never edit a released one.
"""
from collections.abc import Callable

from peewee import FloatField, IntegerField, SqliteDatabase
from playhouse.migrate import SqliteMigrator, migrate

Migration = Callable[[SqliteDatabase], None]

_V1_TABLES = (
    "CREATE TABLE kv (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL)",
    # Single-row tables: the last good target state and the last rejected one.
    "CREATE TABLE target (id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),"
    " document TEXT NOT NULL, etag TEXT, received_at REAL NOT NULL)",
    "CREATE TABLE target_rejection (id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),"
    " etag TEXT, reason TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE TABLE shadow (thing TEXT NOT NULL, name TEXT NOT NULL, document TEXT NOT NULL,"
    " version INTEGER NOT NULL, PRIMARY KEY (thing, name))",
    # AUTOINCREMENT: a report id is never reused, so a late ack cannot remove a newer report.
    "CREATE TABLE outbox (report_id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,"
    " channel TEXT NOT NULL, patch TEXT NOT NULL)",
    "CREATE INDEX outbox_channel ON outbox (channel, report_id)",
    "CREATE TABLE accepted_state (channel TEXT NOT NULL PRIMARY KEY, state TEXT NOT NULL)",
    "CREATE TABLE error (source TEXT NOT NULL, key TEXT NOT NULL, message TEXT NOT NULL,"
    " at REAL NOT NULL, PRIMARY KEY (source, key))",
)


def _v1_initial_tables(db: SqliteDatabase) -> None:
    for statement in _V1_TABLES:
        db.execute_sql(statement)


def _v2_error_since_and_count(db: SqliteDatabase) -> None:
    """Status shows how long a condition has lasted and how often it recurred, not only the last."""
    migrator = SqliteMigrator(db)
    migrate(
        migrator.add_column("error", "since", FloatField(default=0.0)),
        migrator.add_column("error", "count", IntegerField(default=1)),
    )
    db.execute_sql("UPDATE error SET since = at")


def _v3_sequence_numbers_and_pending_restarts(db: SqliteDatabase) -> None:
    """Which of the stored and the rejected target is newer is told by a store sequence number, not by wall
    clocks that jump; restarts asked for are kept until done. The order of the two rows already there is
    kept as their timestamps said it."""
    migrator = SqliteMigrator(db)
    migrate(
        migrator.add_column("target", "seq", IntegerField(default=0)),
        migrator.add_column("target_rejection", "seq", IntegerField(default=0)),
    )
    db.execute_sql("UPDATE target SET seq = 1")
    db.execute_sql("UPDATE target_rejection SET seq = CASE WHEN at > COALESCE((SELECT received_at FROM target), -1)"
                   " THEN 2 ELSE 0 END")
    db.execute_sql("INSERT OR REPLACE INTO kv (key, value) VALUES ('store.seq', '2')")
    db.execute_sql("CREATE TABLE pending_restart (app_id TEXT NOT NULL, service_name TEXT NOT NULL,"
                   " reason TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (app_id, service_name))")


MIGRATIONS: tuple[Migration, ...] = (_v1_initial_tables, _v2_error_since_and_count,
                                     _v3_sequence_numbers_and_pending_restarts)
SCHEMA_VERSION = len(MIGRATIONS)


def upgrade(db: SqliteDatabase, from_version: int) -> None:
    """Run the migrations after `from_version`; the caller holds the write transaction."""
    for version in range(from_version + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[version - 1](db)
        db.pragma("user_version", version)
