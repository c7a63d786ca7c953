"""Messages of the target-state (containers) conversation: poller, persistence, reconciler, reporter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from messages.codec import message
from messages.protocol.json import JSONObject


@message
@dataclass(frozen=True)
class TargetStateFetched:
    """The poller fetched a new, valid target state; persistence stores it, then announces it. Not coalesced:
    its order against TargetStateRejected is what the store numbers (which of the two is newer)."""
    document: JSONObject
    etag: str | None
    fetched_at: float


@message
@dataclass(frozen=True)
class TargetStateRejected:
    """The cloud served a target state that failed validation: the last good one stays in force."""
    etag: str | None
    reason: str
    at: float


@message
@dataclass(frozen=True)
class TargetStateStored:
    """A target state is durable in the store: reconcile toward it (read it from the store)."""
    coalesce: ClassVar[tuple[str, ...]] = ()  # newer supersedes older (runtime.coalesce_key)
    etag: str | None
    stored_at: float
    seq: int  # the store's sequence number of the write: orders it against rejections (store.newer_rejection)


@message
@dataclass(frozen=True)
class TargetRejectionStored:
    """Persistence recorded a rejected target state (the last good one stays in force)."""
    coalesce: ClassVar[tuple[str, ...]] = ()  # newer supersedes older (runtime.coalesce_key)
    etag: str | None
    reason: str
    at: float
    seq: int


@message
@dataclass(frozen=True)
class PollNow:
    """Poll the cloud's target state at once (a notice over MQTT, or an operator)."""
    coalesce: ClassVar[tuple[str, ...]] = ()  # newer supersedes older (runtime.coalesce_key)
    reason: str


@message
@dataclass(frozen=True)
class CurrentStateObserved:
    """The device's current state as the reconciler read it from the engine, in report form."""
    coalesce: ClassVar[tuple[str, ...]] = ()  # newer supersedes older (runtime.coalesce_key)
    state: JSONObject
    at: float


ORPHANED_VOLUMES_KEY = "reconciler.orphaned_volumes"  # the store key (Store.put/get) of OrphanedVolumesSeen.since


@message
@dataclass(frozen=True)
class OrphanedVolumesSeen:
    """When each volume of an app that left the target was first seen so (``{"app/volume": wall-clock
    seconds}``, the whole set): persistence keeps it, so the reconciler's volume_grace survives restarts."""
    since: JSONObject


RELEASE_KEY = "reconciler.release"  # the store key (Store.put/get) of ReleaseChanged.release
IMAGE_LEDGER_KEY = "reconciler.images"  # the store key of ImageLedgerChanged.ledger


@message
@dataclass(frozen=True)
class ReleaseChanged:
    """The release state (actors.target.release, its store form: the committed target and its document, the
    attempt underway, the rolled-back target and why): persistence keeps it, so a restart resumes it."""
    release: JSONObject


@message
@dataclass(frozen=True)
class ImageLedgerChanged:
    """The images the reconciler pulled and the targets it fully applied (`actors.target.images`, the whole
    ledger): persistence keeps it, so cleanup never touches an image Fleetlet did not pull, across restarts."""
    ledger: JSONObject


@message
@dataclass(frozen=True)
class RestartServices:
    """Restart these services of an app (their configuration changed under them): to persistence, which keeps
    the request until the reconciler has carried it out (RestartsRecorded, ServicesRestarted)."""
    app_id: str
    services: tuple[str, ...]
    reason: str


@message
@dataclass(frozen=True)
class RestartsRecorded:
    """A RestartServices is durable: the reconciler carries it out, its sender may forget it."""
    app_id: str
    services: tuple[str, ...]
    reason: str


@message
@dataclass(frozen=True)
class ServicesRestarted:
    """The reconciler carried out the pending restart of a service (it stopped and started, or was recreated,
    or left the target): persistence drops it."""
    app_id: str
    service_name: str


@message
@dataclass(frozen=True)
class HoldService:
    """Stop a service and keep it stopped (``stopped``), or let it run again: from the local API, to persistence,
    which keeps the holds; a hold lasts until the next target state or a start (HoldsRecorded)."""
    app_id: str
    service_name: str
    stopped: bool


@message
@dataclass(frozen=True)
class HoldsRecorded:
    """The services held stopped, as the store keeps them (to the reconciler): ``etag`` is the target they
    were asked under; a newer target releases them."""
    coalesce: ClassVar[tuple[str, ...]] = ()  # newer supersedes older (runtime.coalesce_key)
    holds: tuple[tuple[str, str], ...]  # (app id, service name)
    etag: str | None
