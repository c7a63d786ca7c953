"""The agent's embedded store (SQLite via peewee). `Store` is the only entry point."""
from store.errors import (
    StoreCorrupt,
    StoreError,
    StoreFull,
    StoreMissing,
    StoreTooNew,
    StoreValueError,
)
from store.facade import (
    ErrorRecord,
    PendingReport,
    PendingRestart,
    ShadowState,
    Store,
    TargetRecord,
    TargetRejection,
    newer_rejection,
)

__all__ = [
    "ErrorRecord",
    "PendingReport",
    "PendingRestart",
    "ShadowState",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "StoreFull",
    "StoreMissing",
    "StoreTooNew",
    "StoreValueError",
    "TargetRejection",
    "TargetRecord",
    "newer_rejection",
]
