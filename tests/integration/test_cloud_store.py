"""The cloud's store, on SQLite and on PostgreSQL, and the parsing of ``store.url``."""
from __future__ import annotations

import threading

import pytest

from cloud.db import StoreLocation, StoreUrlError, open_store, parse_store_url
from cloud.store import CloudStore, StoredShadow
from messages.protocol.shadow_document import ShadowError


@pytest.mark.parametrize("url, expected", [
    ("sqlite:///var/cloud.db", StoreLocation("sqlite", path="var/cloud.db")),
    ("sqlite:////srv/fleet/cloud.db", StoreLocation("sqlite", path="/srv/fleet/cloud.db")),
    ("sqlite:///my%20dir/c.db", StoreLocation("sqlite", path="my dir/c.db")),
    ("postgresql://fleet:s%40cret@db.local:6543/cloud?sslmode=require",
     StoreLocation("postgresql", params=(("connect_timeout", "5"), ("database", "cloud"), ("host", "db.local"),
                                         ("password", "s@cret"), ("port", 6543), ("sslmode", "require"),
                                         ("user", "fleet")))),
    ("postgres://db/cloud", StoreLocation("postgresql", params=(("connect_timeout", "5"), ("database", "cloud"),
                                                                ("host", "db"), ("port", 5432)))),
])
def test_store_urls_are_parsed(url, expected):
    assert parse_store_url(url) == expected


@pytest.mark.parametrize("url, problem", [
    ("mysql://db/cloud", "scheme"),
    ("sqlite://host/cloud.db", "sqlite:///relative"),
    ("sqlite:///", "file path"),
    ("sqlite:///:memory:", "file path"),
    ("postgresql://db", "one database"),
    ("postgresql://db/a/b", "one database"),
    ("postgresql://db:99999/cloud", "port"),
    ("postgresql://db/cloud?options=-c%20x", "unknown option 'options'"),
])
def test_unusable_store_urls_are_refused_with_the_reason(url, problem):
    with pytest.raises(StoreUrlError, match=problem):
        parse_store_url(url)


def test_a_postgres_location_never_shows_its_password():
    assert "secret" not in parse_store_url("postgresql://u:secret@h:1/d").describe()


@pytest.fixture
def store(store_url):
    database = open_store(parse_store_url(store_url))
    yield CloudStore(database)
    database.close()


def set_key(key: str, value):
    def change(current: StoredShadow):
        document = dict(current.document or {"state": {}, "version": current.version})
        document["state"] = {**document["state"], key: value}
        document["version"] += 1
        return document, document["version"]
    return change


def test_shadow_changes_keep_versions_across_deletion_and_refusals_write_nothing(store):
    assert store.read_shadow("t", "") == StoredShadow(None, 0)
    assert store.change_shadow("t", "", 100, set_key("a", 1)) == 1
    assert store.change_shadow("t", "named", 100, set_key("a", 1)) == 1  # a separate shadow
    assert store.change_shadow("t", "", 101, set_key("b", 2)) == 2

    def refuse(current):
        raise ShadowError(409, "Version conflict")

    with pytest.raises(ShadowError):
        store.change_shadow("t", "", 102, refuse)
    assert store.read_shadow("t", "").document == {"state": {"a": 1, "b": 2}, "version": 2}
    assert store.change_shadow("t", "", 103, lambda current: (None, "deleted")) == "deleted"
    assert store.read_shadow("t", "") == StoredShadow(None, 2)  # gone, its version remembered
    assert store.read_shadow("t", "named").document["version"] == 1


def test_concurrent_writers_on_separate_connections_lose_nothing(store):
    writers, per_writer = 4, 25

    def write(index: int) -> None:
        try:
            for number in range(per_writer):
                store.change_shadow("busy", "", 0, set_key(f"{index}-{number}", number))
        finally:
            store.close()  # this thread's connection

    threads = [threading.Thread(target=write, args=(index,)) for index in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    document = store.read_shadow("busy", "").document
    assert document["version"] == writers * per_writer
    assert len(document["state"]) == writers * per_writer


def test_devices_targets_and_reports(store):
    assert store.register_device("d1", "thing-1", "token-one") is True
    assert store.register_device("d1", "thing-1b", "token-one-new") is False  # replaced
    assert store.device_for_token("token-one") is None
    assert store.device_for_token("token-one-new").thing == "thing-1b"
    with pytest.raises(ValueError, match="another device"):
        store.register_device("d2", "thing-2", "token-one-new")

    etag, changed = store.set_target_state("d1", {"apps": {}}, 5)
    assert changed and store.set_target_state("d1", {"apps": {}}, 6) == (etag, False)
    assert store.target_state("d1").document == {"apps": {}}
    assert store.set_target_state("d1", {"apps": {"x": {}}}, 7)[0] != etag

    assert store.apply_report("d1", {"a": {"b": 1}, "c": 2}, 8) == {"a": {"b": 1}, "c": 2}
    assert store.apply_report("d1", {"a": {"d": 3}, "c": None}, 9) == {"a": {"b": 1, "d": 3}}
    assert store.device_state("d1").updated_at == 9
    assert store.report_count("d1") == 2
    assert store.device_state("d2") is None
