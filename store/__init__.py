"""The agent's embedded store (SQLite via peewee). `Store` is the only entry point."""
from store.errors import (
    StoreCorrupt,
    StoreError,
    StoreFull,
    StoreMissing,
    StoreTooNew,
    StoreValueError,
)
from store.facade import ErrorRecord, PendingReport, ShadowState, Store, TargetRecord, TargetRejection

__all__ = [
    "ErrorRecord",
    "PendingReport",
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
]
