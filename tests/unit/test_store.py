import functools
import itertools
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messages.protocol.patches import apply_patch, compose
from store import (
    PendingReport,
    PendingRestart,
    ShadowState,
    Store,
    StoreCorrupt,
    StoreError,
    StoreMissing,
    StoreTooNew,
    StoreValueError,
    TargetRecord,
    TargetRejection,
    newer_rejection,
)
from store.db import APPLICATION_ID
from store.facade import MAX_PENDING_REPORTS
from store.migrations import SCHEMA_VERSION
from store.models import bind_models

REPO_ROOT = Path(__file__).resolve().parents[2]

# Writes in a loop and prints each iteration's number once its transactions have committed.
WRITER_LOOP = r"""
import sys
from store import Store

path, channel, tag, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with Store.open(path) as store:
    i = 0
    while count < 0 or i < count:
        store.put(tag, i)
        store.save_shadow("thing", tag, {"n": i}, i)
        store.enqueue_report(channel, {f"{tag}{i}": i})
        print(i, flush=True)
        i += 1
"""


def start_writer(path, channel="c", tag="w", count=-1):
    return subprocess.Popen(
        [sys.executable, "-c", WRITER_LOOP, str(path), channel, tag, str(count)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextmanager
def running_writer(path, **arguments):
    with start_writer(path, **arguments) as writer:
        try:
            yield writer
        finally:
            writer.kill()


@pytest.fixture
def path(tmp_path):
    return tmp_path / "fleetlet.db"


@pytest.fixture
def store(path):
    with Store.open(path) as store:
        yield store


def raw_connection(path):
    return sqlite3.connect(path, isolation_level=None)


def snapshot(directory):
    return {file.name: file.read_bytes() for file in directory.iterdir()}


# Opening and schema


def test_new_store_has_the_current_schema_in_wal_mode(store, path):
    db = store._db
    assert db.pragma("user_version") == SCHEMA_VERSION
    assert db.pragma("application_id") == APPLICATION_ID
    assert db.pragma("journal_mode") == "wal"
    for model in vars(bind_models(db)).values():
        columns = {column.name for column in db.get_columns(model._meta.table_name)}
        assert columns == set(model._meta.columns), model._meta.table_name


@pytest.mark.parametrize(("synchronous", "level"), [("FULL", 2), ("NORMAL", 1)])
def test_synchronous_level_is_configurable(path, synchronous, level):
    with Store.open(path, synchronous=synchronous) as store:
        assert store._db.pragma("synchronous") == level


@pytest.mark.parametrize("arguments", [{"synchronous": "OFF"}, {"busy_timeout": -1}])
def test_bad_open_arguments_are_refused(path, arguments):
    with pytest.raises(StoreValueError):
        Store.open(path, **arguments)
    assert not path.exists()


def test_data_survives_reopening(path):
    with Store.open(path) as store:
        store.save_target({"apps": {}}, '"e1"', 10.0)
        store.enqueue_report("device-state", {"a": 1})
    with Store.open(path) as store:
        assert store.load_target()[:3] == TargetRecord({"apps": {}}, '"e1"', 10.0)[:3]
        assert store.pending_report("device-state").patch == {"a": 1}


def test_which_of_target_and_rejection_is_newer_is_told_by_store_order_not_clocks(path):
    with Store.open(path) as store:
        store.save_target({"apps": {}}, '"good"', 1000.0)
        store.record_target_rejection('"bad"', "apps: not an object", 10.0)  # the clock jumped back
        assert newer_rejection(store.load_target(), store.last_target_rejection())
        store.save_target({"apps": {}}, '"good-2"', 5.0)
        assert not newer_rejection(store.load_target(), store.last_target_rejection())
    assert newer_rejection(None, TargetRejection('"bad"', "why", 1.0, 1))
    assert not newer_rejection(TargetRecord({}, '"a"', 1.0, 1), None)


def test_pending_restarts_are_kept_until_cleared_one_per_service(path):
    with Store.open(path) as store:
        store.add_restarts("1", ("web", "db"), "config changed")
        store.add_restarts("1", ("web",), "config changed again")
    with Store.open(path) as store:
        assert store.pending_restarts() == [PendingRestart("1", "db", "config changed"),
                                            PendingRestart("1", "web", "config changed again")]
        store.clear_restart("1", "web")
        assert store.pending_restarts() == [PendingRestart("1", "db", "config changed")]


V1_SCHEMA = (
    "CREATE TABLE kv (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE target (id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),"
    " document TEXT NOT NULL, etag TEXT, received_at REAL NOT NULL)",
    "CREATE TABLE target_rejection (id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),"
    " etag TEXT, reason TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE TABLE shadow (thing TEXT NOT NULL, name TEXT NOT NULL, document TEXT NOT NULL,"
    " version INTEGER NOT NULL, PRIMARY KEY (thing, name))",
    "CREATE TABLE outbox (report_id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,"
    " channel TEXT NOT NULL, patch TEXT NOT NULL)",
    "CREATE INDEX outbox_channel ON outbox (channel, report_id)",
    "CREATE TABLE accepted_state (channel TEXT NOT NULL PRIMARY KEY, state TEXT NOT NULL)",
    "CREATE TABLE error (source TEXT NOT NULL, key TEXT NOT NULL, message TEXT NOT NULL,"
    " at REAL NOT NULL, PRIMARY KEY (source, key))",
    "INSERT INTO kv VALUES ('poller', '{\"backoff\":4}')",
    "INSERT INTO target VALUES (1, '{\"apps\":{}}', 'etag-1', 100.0)",
    "INSERT INTO target_rejection VALUES (1, 'etag-2', 'apps: not an object', 101.0)",
    "INSERT INTO shadow VALUES ('pi', '', '{\"state\":{}}', 7)",
    "INSERT INTO outbox (channel, patch) VALUES ('device-state', '{\"a\":1}')",
    "INSERT INTO accepted_state VALUES ('device-state', '{\"a\":0}')",
    "INSERT INTO error VALUES ('docker', 'web', 'pull failed', 102.0)",
    f"PRAGMA application_id = {APPLICATION_ID}",
    "PRAGMA user_version = 1",
)


def test_version_1_database_is_migrated_with_its_data_kept(path):
    with raw_connection(path) as connection:
        for statement in V1_SCHEMA:
            connection.execute(statement)
    connection.close()

    with Store.open(path) as store:
        assert store._db.pragma("user_version") == SCHEMA_VERSION
        assert store.get("poller") == {"backoff": 4}
        assert store.load_target() == TargetRecord({"apps": {}}, "etag-1", 100.0, 1)
        assert store.last_target_rejection() == TargetRejection("etag-2", "apps: not an object", 101.0, 2)
        assert store.pending_restarts() == []
        assert store.save_target({"apps": {}}, "etag-3", 50.0) == 3  # after what migration 3 numbered
        assert store.load_shadow("pi", "") == ShadowState({"state": {}}, 7)
        assert store.pending_report("device-state") == PendingReport(1, {"a": 1})
        assert store.load_accepted("device-state") == {"a": 0}
        assert store.errors() == [
            {"source": "docker", "key": "web", "message": "pull failed", "at": 102.0, "since": 102.0, "count": 1}
        ]
        store.record_error("docker", "web", "pull failed again", 103.0)
        assert store.errors()[0] == {
            "source": "docker", "key": "web", "message": "pull failed again", "at": 103.0, "since": 102.0, "count": 2,
        }


def test_older_schema_is_refused_by_a_reader(path):
    with raw_connection(path) as connection:
        for statement in V1_SCHEMA:
            connection.execute(statement)
    connection.close()
    with pytest.raises(StoreError, match="schema version 1 is older"):
        Store.open(path, readonly=True)


@pytest.mark.parametrize("readonly", [False, True])
def test_newer_schema_is_refused_and_left_untouched(path, readonly):
    Store.open(path).close()
    with raw_connection(path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    before = path.read_bytes()

    with pytest.raises(StoreTooNew, match=f"schema version {SCHEMA_VERSION + 1} is newer") as raised:
        Store.open(path, readonly=readonly)
    assert raised.value.path == str(path)
    assert path.read_bytes() == before


def store_with_data(path):
    with Store.open(path) as store:
        for i in range(200):
            store.put(f"key{i}", {"padding": "x" * 400, "i": i})
    return path.read_bytes()


def truncated(data):
    return data[: len(data) // 2]


def zeroed_page(data):
    return data[: 4096 * 9] + bytes(4096) + data[4096 * 10 :]


def garbage(data):
    return b"#!/bin/sh\necho this is not a database\n" * 100


def header_only(data):
    return data[:16]


@pytest.mark.parametrize("damage", [truncated, zeroed_page, garbage, header_only])
@pytest.mark.parametrize("readonly", [False, True])
def test_damaged_file_is_refused_as_corrupt_and_left_untouched(path, damage, readonly):
    path.write_bytes(damage(store_with_data(path)))
    before = path.read_bytes()

    with pytest.raises(StoreCorrupt) as raised:
        Store.open(path, readonly=readonly)
    assert str(path) in str(raised.value)
    # A read-only open of a WAL database may leave SQLite's empty -wal/-shm; the database is as it was.
    assert path.read_bytes() == before


def test_another_programs_database_is_refused_and_left_untouched(path):
    with raw_connection(path) as connection:
        connection.execute("CREATE TABLE users (name TEXT)")
    connection.close()
    before = snapshot(path.parent)
    with pytest.raises(StoreError, match="not a Fleetlet store"):
        Store.open(path)
    assert snapshot(path.parent) == before


def test_reader_of_a_missing_store_gets_store_missing(path):
    with pytest.raises(StoreMissing, match="does not exist"):
        Store.open(path, readonly=True)
    assert not path.exists()


def test_reader_cannot_write(store, path):
    store.put("kept", 1)
    with Store.open(path, readonly=True) as reader:
        assert reader.get("kept") == 1
        with pytest.raises(StoreError, match="read-only"):
            reader.put("kept", 2)
        with pytest.raises(StoreError, match="read-only"):
            reader.enqueue_report("c", {"a": 1})
    assert store.get("kept") == 1
    assert store.pending_channels() == []


def test_reader_sees_the_writers_commits(store, path):
    with Store.open(path, readonly=True) as reader:
        assert reader.load_shadow("pi", "") is None
        store.save_shadow("pi", "", {"state": {}}, 1)
        assert reader.load_shadow("pi", "") == ShadowState({"state": {}}, 1)


def test_closed_store_refuses_use(path):
    store = Store.open(path)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get("anything")


def test_sqlite_failures_surface_as_store_error(path):
    with Store.open(path, busy_timeout=0.05) as store:
        blocker = raw_connection(path)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="put failed: database is locked"):
                store.put("k", 1)
        finally:
            blocker.close()
        store.put("k", 1)
        assert store.get("k") == 1


# Values


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": {1: "x"}}, r"document\.a: key 1 is not a string"),
        ({"a": [1, (2, 3)]}, r"document\.a\[1\]: tuple is not a JSON value"),
        ({"a": float("nan")}, r"document\.a: nan is not a finite number"),
        ({"a": {"b"}}, r"document\.a: set is not a JSON value"),
        (["not", "an", "object"], r"document: expected a JSON object"),
        (functools.reduce(lambda inner, _: {"x": inner}, range(100), {}), "nested deeper than"),
        ({"a": [2**63]}, r"document\.a\[0\]: an integer outside the signed 64-bit range"),  # what the reader takes
        ({"a": "\ud800"}, r"document\.a: a string holds a lone surrogate"),
        ({"\udc00": 1}, r"document key: a string holds a lone surrogate"),
    ],
)
def test_non_json_documents_are_refused_and_nothing_is_written(store, value, message):
    with pytest.raises(StoreValueError, match=message):
        store.save_target(value, None, 1.0)
    assert store.load_target() is None


@pytest.mark.parametrize(
    "call",
    [
        lambda store: store.save_target({}, 5, 1.0),
        lambda store: store.save_target({}, None, float("inf")),
        lambda store: store.save_shadow("", "", {}, 1),
        lambda store: store.save_shadow("pi", "", {}, -1),
        lambda store: store.save_shadow("pi", "", {}, True),
        lambda store: store.record_error("docker", "web", "", 1.0),
        lambda store: store.put("", 1),
    ],
)
def test_bad_arguments_are_refused(store, call):
    with pytest.raises(StoreValueError):
        call(store)


def test_documents_are_stored_as_canonical_json(store):
    store.put("doc", {"b": 1, "a": [True, None, 1.5, "é"]})
    (text,) = store._db.execute_sql("SELECT value FROM kv WHERE key = 'doc'").fetchone()
    assert text == '{"a":[true,null,1.5,"\\u00e9"],"b":1}'
    assert store.get("doc") == {"a": [True, None, 1.5, "é"], "b": 1}


def test_stored_json_is_read_strictly(store):
    store.put("doc", 1)
    store._db.execute_sql("UPDATE kv SET value = ? WHERE key = 'doc'", ('{"a": 1, "a": 2}',))
    with pytest.raises(StoreValueError, match="stored JSON is unreadable: duplicate key 'a'"):
        store.get("doc")


# Target state, shadows, accepted state, errors, key/value


def test_target_and_rejection_keep_only_the_latest(store):
    assert store.load_target() is None
    assert store.last_target_rejection() is None
    store.save_target({"apps": {"1": {}}}, "e1", 1.0)
    store.save_target({"apps": {}}, None, 2.0)
    store.record_target_rejection("e2", "apps.1: services missing", 3.0)
    store.record_target_rejection(None, "body is not JSON", 4.0)
    assert store.load_target() == ({"apps": {}}, None, 2.0, 4)
    assert store.last_target_rejection() == (None, "body is not JSON", 4.0, 6)


def test_stale_shadow_version_is_ignored(store):
    assert store.save_shadow("pi", "net", {"v": 5}, 5) is True
    assert store.save_shadow("pi", "net", {"v": 4}, 4) is False
    assert store.load_shadow("pi", "net") == ({"v": 5}, 5)
    assert store.save_shadow("pi", "net", {"v": "5 again"}, 5) is True
    assert store.save_shadow("pi", "net", {"v": 6}, 6) is True
    assert store.load_shadow("pi", "net") == ({"v": 6}, 6)
    assert store.load_shadow("pi", "") is None


def test_accepted_state_per_channel(store):
    assert store.load_accepted("device-state") is None
    store.save_accepted("device-state", {"apps": {}})
    store.save_accepted("shadow:pi/", {"led": "on"})
    store.save_accepted("device-state", {"apps": {"1": {}}})
    assert store.load_accepted("device-state") == {"apps": {"1": {}}}
    assert store.load_accepted("shadow:pi/") == {"led": "on"}


def test_errors_keep_since_and_count_until_cleared(store):
    store.record_error("reconciler", "web", "image missing", 10.0)
    store.record_error("reconciler", "web", "image missing", 20.0)
    store.record_error("docker", "", "daemon unreachable", 15.0)
    assert store.errors() == [
        {"source": "docker", "key": "", "message": "daemon unreachable", "at": 15.0, "since": 15.0, "count": 1},
        {"source": "reconciler", "key": "web", "message": "image missing", "at": 20.0, "since": 10.0, "count": 2},
    ]
    assert store.clear_error("docker", "") is True
    assert store.clear_error("docker", "") is False
    store.record_error("docker", "", "daemon unreachable", 30.0)
    assert store.errors()[0]["since"] == 30.0


def test_key_value(store):
    assert store.get("missing") is None
    assert store.get("missing", default=[]) == []
    store.put("counter", 1)
    store.put("counter", {"n": 2})
    assert store.get("counter") == {"n": 2}


# Outbox


def test_outbox_merges_offline_reports_and_an_old_ack_keeps_newer_data(store):
    first = store.enqueue_report("device-state", {"apps": {"1": {"state": "running"}}, "gone": None})
    sent = store.pending_report("device-state")
    assert sent == (first, {"apps": {"1": {"state": "running"}}, "gone": None})

    # A newer change is merged while `sent` is in flight: the merged report gets a new id.
    second = store.enqueue_report("device-state", {"apps": {"2": {"state": "created"}}})
    assert second != first
    assert store.ack_report("device-state", sent.report_id) is False
    merged = {"apps": {"1": {"state": "running"}, "2": {"state": "created"}}, "gone": None}
    assert store.pending_report("device-state") == (second, merged)

    assert store.ack_report("device-state", second) is True
    assert store.ack_report("device-state", second) is False
    assert store.pending_report("device-state") is None
    assert store.pending_channels() == []

    # Ids are never reused, so a late duplicate ack cannot remove a report queued afterwards.
    third = store.enqueue_report("device-state", {"x": 1})
    assert third > second
    assert store.ack_report("device-state", second) is False
    assert store.pending_report("device-state") == (third, {"x": 1})


def test_outbox_keeps_a_patch_that_cannot_merge_as_a_separate_report(store):
    store.enqueue_report("shadow:pi/", {"net": None})
    store.enqueue_report("shadow:pi/", {"net": {"dhcp": True}})
    first = store.pending_report("shadow:pi/")
    assert first.patch == {"net": None}
    store.ack_report("shadow:pi/", first.report_id)
    assert store.pending_report("shadow:pi/").patch == {"net": {"dhcp": True}}


def test_outbox_unchanged_merge_and_empty_patch_keep_the_report(store):
    assert store.enqueue_report("c", {}) is None
    assert store.pending_channels() == []
    report_id = store.enqueue_report("c", {"a": 1})
    assert store.enqueue_report("c", {"a": 1}) == report_id
    assert store.enqueue_report("c", {}) == report_id
    # 1 and 1.0 and True are equal in Python but not on the wire.
    assert store.enqueue_report("c", {"a": True}) != report_id
    assert store.pending_report("c").patch == {"a": True}


def test_outbox_channels_are_independent(store):
    store.enqueue_report("shadow:pi/", {"a": 1})
    store.enqueue_report("device-state", {"b": 2})
    assert store.pending_channels() == ["device-state", "shadow:pi/"]
    store.ack_report("device-state", store.pending_report("device-state").report_id)
    assert store.pending_channels() == ["shadow:pi/"]
    assert store.pending_report("shadow:pi/").patch == {"a": 1}


KEYS = st.sampled_from(["a", "b", "c"])
SCALARS = st.none() | st.integers(-2, 2) | st.booleans() | st.lists(st.integers(0, 2), max_size=2)
PATCHES = st.recursive(SCALARS, lambda inner: st.dictionaries(KEYS, inner, max_size=3), max_leaves=8).filter(
    lambda value: isinstance(value, dict)
)
STATES = PATCHES.map(lambda patch: apply_patch({}, patch))


def apply_all(state, patches):
    return functools.reduce(apply_patch, patches, state)


@given(STATES, PATCHES, PATCHES)
def test_composed_patch_does_what_the_two_do_in_turn(state, earlier, later):
    combined = compose(earlier, later)
    if combined is not None:
        assert apply_patch(state, combined) == apply_all(state, [earlier, later])


EXAMPLE_NUMBERS = itertools.count()


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    with Store.open(tmp_path_factory.mktemp("outbox") / "outbox.db", synchronous="NORMAL") as store:
        yield store


def drain(store, channel):
    sent = []
    while (report := store.pending_report(channel)) is not None:
        sent.append(report.patch)
        store.ack_report(channel, report.report_id)
    return sent


@settings(max_examples=60, deadline=None)
@given(state=STATES, patches=st.lists(PATCHES, max_size=6))
def test_outbox_reports_one_by_one_equal_their_combined_patch(shared_store, state, patches):
    example = next(EXAMPLE_NUMBERS)
    one_by_one, combined = f"one-by-one-{example}", f"combined-{example}"
    for patch in patches:
        shared_store.enqueue_report(one_by_one, patch)
    combined_patch = functools.reduce(lambda a, b: a if a is None else compose(a, b), patches, {})
    if combined_patch is not None:
        shared_store.enqueue_report(combined, combined_patch)

    sent = drain(shared_store, one_by_one)
    assert apply_all(state, sent) == apply_all(state, patches)
    if combined_patch is not None:
        assert sent == drain(shared_store, combined)
        assert len(sent) <= 1


# Crashes and concurrency


def test_kill_9_while_writing_loses_no_committed_data(path):
    Store.open(path).close()
    with running_writer(path) as writer:
        for _ in range(300):
            last_committed = int(writer.stdout.readline())
        writer.send_signal(signal.SIGKILL)
        last_committed = max([last_committed, *map(int, writer.stdout.read().split())])
    assert writer.returncode == -signal.SIGKILL
    assert Path(f"{path}-wal").stat().st_size > 0, "the crash should leave a WAL to recover"

    # The iteration after the last one reported may have committed some of its transactions.
    for readonly in (True, False):
        with Store.open(path, readonly=readonly) as store:
            written = store.get("w")
            assert last_committed <= written <= last_committed + 1
            shadow = store.load_shadow("thing", "w")
            assert shadow.document == {"n": shadow.version}
            assert last_committed <= shadow.version <= written
            keys = set(store.pending_report("c").patch)
            assert {f"w{i}" for i in range(last_committed + 1)} <= keys


def test_readers_see_consistent_growing_state_while_a_writer_process_writes(path):
    Store.open(path).close()
    seen = []
    with running_writer(path, count=400) as writer, Store.open(path, readonly=True) as reader:
        while writer.poll() is None:
            shadow = reader.load_shadow("thing", "w")
            if shadow is not None:
                assert shadow.document == {"n": shadow.version}
                seen.append(shadow.version)
        assert writer.returncode == 0, writer.stderr.read()
    assert seen == sorted(seen)
    assert len(set(seen)) > 1
    with Store.open(path, readonly=True) as reader:
        assert reader.load_shadow("thing", "w").version == 399


def test_two_writer_processes_merging_into_one_report_lose_nothing(path):
    Store.open(path).close()
    writers = [start_writer(path, channel="shared", tag=tag, count=150) for tag in ("x", "y")]
    results = [writer.communicate(timeout=60) for writer in writers]
    for writer, (_, stderr) in zip(writers, results, strict=True):
        assert writer.returncode == 0, stderr
    with Store.open(path) as store:
        keys = set(store.pending_report("shared").patch)
    assert keys == {f"{tag}{i}" for tag in ("x", "y") for i in range(150)}


def test_store_used_from_another_thread_is_refused(store):
    refusals = []

    def use_store():
        try:
            store.get("k")
        except StoreError as error:
            refusals.append(error)

    thread = threading.Thread(target=use_store)
    thread.start()
    thread.join()
    assert "thread" in str(refusals[0])


def test_a_key_flipping_between_object_and_null_keeps_two_reports_not_one_per_flip(store):
    truth: dict = {}
    for flip in range(200):
        patch = {"net": {"dhcp": flip % 3 == 0, "n": flip}} if flip % 2 else {"net": None}
        truth = apply_patch(truth, patch)
        store.enqueue_report("shadow:pi/", patch)
        assert len(pending_rows(store, "shadow:pi/")) <= 2
    assert apply_all({"net": {"old": 1}}, drain(store, "shadow:pi/")) == truth  # exact whatever the cloud holds


def test_keys_flipping_in_turn_are_capped_and_newest_wins_from_the_accepted_state(store):
    store.save_accepted("c", {"keep": 1, "a": {"x": 1}})
    receiver, truth = {"keep": 1, "a": {"x": 1}}, {"keep": 1, "a": {"x": 1}}
    for flip in range(100):
        key = "ab"[flip % 2]
        patch = {key: {"v": flip}} if (flip // 2) % 2 else {key: None}
        truth = apply_patch(truth, patch)
        store.enqueue_report("c", patch)
        assert len(pending_rows(store, "c")) <= MAX_PENDING_REPORTS
    assert apply_all(receiver, drain(store, "c")) == truth


def pending_rows(store, channel):
    return store._db.execute_sql("SELECT report_id FROM outbox WHERE channel = ?", (channel,)).fetchall()
