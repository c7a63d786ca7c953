"""Image cleanup (pure): which of the images Fleetlet pulled may go after a converged pass.

Only images Fleetlet pulled itself are candidates (the ledger, kept in the store); of those, the images of the
target in force and of the kept releases stay, and so does any image a container uses, whoever owns it.

The kept releases are today the previous target the reconciler fully applied (`ImageLedger.applied`). The
safe-updates work (issue 11) owns releases and rollback: it passes its own committed release to
`images_to_keep` instead, with nothing else to change here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from actors.target.model import EngineState
from messages.protocol.json import JSONObject
from messages.protocol.target_state import InvalidTargetState, TargetState, parse_target_state

KEPT_RELEASES = 1  # fully applied targets kept besides the one in force (the previous good release)


@dataclass(frozen=True)
class AppliedTarget:
    etag: str | None
    document: JSONObject  # as stored, less its "registries": logins live with the target in force only


@dataclass(frozen=True)
class ImageLedger:
    """What the reconciler keeps in the store about images: those it pulled, the targets it fully applied
    (oldest first; the last is the one in force once converged)."""
    pulled: frozenset[str] = frozenset()
    applied: tuple[AppliedTarget, ...] = ()

    def with_pull(self, image: str) -> "ImageLedger":
        return ImageLedger(self.pulled | {image}, self.applied)

    def without(self, image: str) -> "ImageLedger":
        return ImageLedger(self.pulled - {image}, self.applied)

    def with_applied(self, etag: str | None, document: JSONObject) -> "ImageLedger":
        """The target `etag` converged: it becomes the last applied, the one before it the previous release."""
        if self.applied and self.applied[-1].etag == etag:
            return self
        kept = AppliedTarget(etag, {key: value for key, value in document.items() if key != "registries"})
        return ImageLedger(self.pulled, (*self.applied, kept)[-(KEPT_RELEASES + 1):])

    def previous_releases(self) -> list[TargetState]:
        """The kept releases before the last applied one, parsed (one that no longer parses keeps nothing)."""
        kept = []
        for applied in self.applied[:-1]:
            try:
                kept.append(parse_target_state(applied.document))
            except InvalidTargetState:
                continue
        return kept


def images_of(target: TargetState) -> frozenset[str]:
    return frozenset(service.config.image for app in target.apps for service in app.services)


def images_to_keep(current: TargetState, kept: Iterable[TargetState]) -> frozenset[str]:
    """The images of the target in force and of each kept release (the previous good one, for a rollback)."""
    keep = images_of(current)
    for release in kept:
        keep |= images_of(release)
    return keep


def images_to_remove(pulled: Iterable[str], keep: frozenset[str], engine: EngineState) -> list[str]:
    """Pulled images present in the engine that nothing keeps and no container uses, sorted."""
    return sorted(image for image in pulled
                  if image in engine.images and image not in keep and image not in engine.images_in_use)


def ledger_to_json(ledger: ImageLedger) -> JSONObject:
    return {"pulled": sorted(ledger.pulled),
            "applied": [{"etag": applied.etag, "document": applied.document} for applied in ledger.applied]}


def ledger_from_json(value: object) -> ImageLedger:
    """What ledger_to_json wrote; anything else is an empty ledger (nothing is then removed: the safe side)."""
    if not isinstance(value, dict):
        return ImageLedger()
    pulled = value.get("pulled")
    applied = value.get("applied")
    return ImageLedger(
        frozenset(image for image in pulled if isinstance(image, str)) if isinstance(pulled, list) else frozenset(),
        tuple(AppliedTarget(item.get("etag") if isinstance(item.get("etag"), str) else None, item["document"])
              for item in applied if isinstance(item, dict) and isinstance(item.get("document"), dict))
        if isinstance(applied, list) else ())
