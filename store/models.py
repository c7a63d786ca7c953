"""Peewee models of the latest schema version (migrations.py creates the tables).

Models are built per database rather than bound globally, so several stores (a writer and a
read-only view, or two test databases) can be open in one process.
"""
from types import SimpleNamespace

from peewee import (
    AutoField,
    CompositeKey,
    FloatField,
    IntegerField,
    Model,
    SqliteDatabase,
    TextField,
)


def bind_models(db: SqliteDatabase) -> SimpleNamespace:
    class Base(Model):
        class Meta:
            database = db

    class KeyValueRow(Base):
        key = TextField(primary_key=True)
        value = TextField()

        class Meta:
            table_name = "kv"

    class TargetRow(Base):
        id = IntegerField(primary_key=True)
        document = TextField()
        etag = TextField(null=True)
        received_at = FloatField()
        seq = IntegerField()

        class Meta:
            table_name = "target"

    class TargetRejectionRow(Base):
        id = IntegerField(primary_key=True)
        etag = TextField(null=True)
        reason = TextField()
        at = FloatField()
        seq = IntegerField()

        class Meta:
            table_name = "target_rejection"

    class PendingRestartRow(Base):
        app_id = TextField()
        service_name = TextField()
        reason = TextField()
        seq = IntegerField()

        class Meta:
            table_name = "pending_restart"
            primary_key = CompositeKey("app_id", "service_name")

    class ShadowRow(Base):
        thing = TextField()
        name = TextField()
        document = TextField()
        version = IntegerField()

        class Meta:
            table_name = "shadow"
            primary_key = CompositeKey("thing", "name")

    class OutboxRow(Base):
        report_id = AutoField()
        channel = TextField()
        patch = TextField()

        class Meta:
            table_name = "outbox"

    class AcceptedStateRow(Base):
        channel = TextField(primary_key=True)
        state = TextField()

        class Meta:
            table_name = "accepted_state"

    class ErrorRow(Base):
        source = TextField()
        key = TextField()
        message = TextField()
        at = FloatField()
        since = FloatField()
        count = IntegerField()

        class Meta:
            table_name = "error"
            primary_key = CompositeKey("source", "key")

    return SimpleNamespace(
        KeyValueRow=KeyValueRow,
        TargetRow=TargetRow,
        TargetRejectionRow=TargetRejectionRow,
        PendingRestartRow=PendingRestartRow,
        ShadowRow=ShadowRow,
        OutboxRow=OutboxRow,
        AcceptedStateRow=AcceptedStateRow,
        ErrorRow=ErrorRow,
    )
