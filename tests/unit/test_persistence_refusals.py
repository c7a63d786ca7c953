"""The persistence actor's handlers against a real store: content the store cannot hold and a full disk are
recorded, never a crash (issue 14: "Python int too large to convert to SQLite INTEGER" restart-looped it).

The handlers run in the test's process with publish replaced by a list; the store is a real SQLite file."""
from __future__ import annotations

import pytest

from actors.persistence import Persistence
from messages.bus.outbox import EnqueueReport, RecordError, ReportQueued
from messages.bus.shadow import ShadowDocumentSeen
from messages.bus.target import TargetStateFetched, TargetStateStored
from store import Store


@pytest.fixture
def persistence(tmp_path):
    actor, published = Persistence(), []
    actor.publish = published.append
    actor.store = Store.open(str(tmp_path / "agent.db"))
    actor.config = {"store": {"path": str(tmp_path / "agent.db"), "disk_reserve_mb": 0}}
    actor.published = published
    yield actor
    actor.store.close()


def recorded(actor):
    return {(row["source"], row["key"]): row["message"] for row in actor.store.errors()}


@pytest.mark.parametrize("msg", [
    ShadowDocumentSeen("t", "", {"state": {"desired": {"level": 2**63}}}, 1),
    ShadowDocumentSeen("t", "", {"state": {"desired": {"level": float("inf")}}}, 1),
    ShadowDocumentSeen("t", "", {"state": {"desired": {"s": "\ud800"}}}, 1),
    ShadowDocumentSeen("t", "", {}, 2**64),  # a version beyond what SQLite holds
    TargetStateFetched({"apps": {"1": {"appId": 2**64}}}, '"e"', 1.0),
    EnqueueReport("c", {"x": float("nan")}),
])
def test_content_the_store_cannot_hold_is_recorded_and_not_announced(persistence, msg):
    getattr(persistence, f"on_{type(msg).__name__}")(msg)  # raises nothing
    assert "cannot store" in recorded(persistence)[("persistence", type(msg).__name__)]
    assert persistence.published == []  # nothing stored, so nothing announced
    assert persistence.store.load_shadow("t", "") is None and persistence.store.load_target() is None


def test_a_full_disk_drops_the_write_without_crashing_and_the_next_write_after_space_returns_succeeds(persistence):
    db = persistence.store._db
    pages = db.execute_sql("PRAGMA page_count").fetchone()[0]
    db.execute_sql(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL at the first page more
    big = {"blob": "x" * 200_000}
    persistence.on_EnqueueReport(EnqueueReport("c", big))
    persistence.on_TargetStateFetched(TargetStateFetched({"apps": {}, "pad": "y" * 200_000}, '"e"', 1.0))
    persistence.on_RecordError(RecordError("s", "k", "z" * 200_000, 1.0))
    assert persistence.published == []
    assert persistence.store.pending_report("c") is None and persistence.store.load_target() is None

    db.execute_sql("PRAGMA max_page_count = 1073741823")  # space again
    persistence.on_EnqueueReport(EnqueueReport("c", big))
    persistence.on_TargetStateFetched(TargetStateFetched({"apps": {}}, '"e"', 1.0))
    assert [type(msg) for msg in persistence.published] == [ReportQueued, TargetStateStored]
    assert persistence.store.pending_report("c").patch == big


def test_the_reconcilers_volume_clock_goes_to_the_store_and_survives_a_restart(persistence):
    from actors.target.model import EngineState, Resource, orphans_from_json
    from actors.target.reconciler import Reconciler, ReconcilerSettings
    from messages.bus.target import ORPHANED_VOLUMES_KEY, OrphanedVolumesSeen
    from messages.protocol.target_state import TargetState

    reconciler, sent = Reconciler(), []
    reconciler.publish, reconciler.options, reconciler.orphans_since = sent.append, ReconcilerSettings(), {}
    state = EngineState(volumes=frozenset({Resource("2", "logs")}))
    first = reconciler._orphans(TargetState(), state)
    again = reconciler._orphans(TargetState(), state)
    assert [type(msg) for msg in sent] == [OrphanedVolumesSeen]  # published once, when it changed
    assert first.since == again.since and again.grace == 86400.0
    persistence.on_OrphanedVolumesSeen(sent[0])
    assert orphans_from_json(persistence.store.get(ORPHANED_VOLUMES_KEY)) == first.since  # what started() reads


def test_a_target_that_would_eat_into_the_disk_reserve_is_not_stored(persistence):
    persistence.config["store"]["disk_reserve_mb"] = 100_000_000  # 100 TB kept free: more than any test disk
    persistence.on_TargetStateFetched(TargetStateFetched({"apps": {}}, '"e"', 1.0))
    assert persistence.store.load_target() is None and persistence.published == []
    assert "not enough disk space: needs 1 MB, 0 MB free" in recorded(persistence)[("persistence",
                                                                                   "TargetStateFetched")]
    persistence.config["store"]["disk_reserve_mb"] = 0
    persistence.on_TargetStateFetched(TargetStateFetched({"apps": {}}, '"e"', 1.0))
    assert persistence.store.load_target().etag == '"e"'
