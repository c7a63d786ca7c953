"""Images (pure parts): registry logins in the target, pull progress, the disk preflight's rules, cleanup."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.target.engine.preflight import LayerPlan, needed_bytes, split_reference
from actors.target.engine.pull_progress import PullFailed, PullState, fold, percent
from actors.target.images import (
    ImageLedger,
    images_to_keep,
    images_to_remove,
    ledger_from_json,
    ledger_to_json,
)
from actors.target.model import EngineState
from actors.target.reconciler import size_text
from actors.target.report import with_progress
from messages.protocol.target_state import (
    InvalidTargetState,
    credentials_for,
    parse_target_state,
    registry_host,
    to_json,
)
from store.space import refusal

HOST = "127.0.0.1:5443"
MIB = 1024 * 1024


def target(images: dict[str, str], registries: dict | None = None):
    document: dict = {"apps": {"1": {"services": [{"serviceName": name, "config": {"image": image}}
                                                  for name, image in images.items()]}}}
    if registries is not None:
        document["registries"] = registries
    return parse_target_state(document)


# -- registries ---------------------------------------------------------------------------------------------

def test_a_login_is_kept_per_host_round_trips_and_never_shows_its_password():
    parsed = target({"web": f"{HOST}/team/web:1"}, {HOST: {"username": "u", "password": "s3cret"}})
    login = credentials_for(parsed, f"{HOST}/team/web:1")
    assert login is not None and (login.username, login.password) == ("u", "s3cret")
    assert "s3cret" not in repr(parsed)
    assert parse_target_state(to_json(parsed)) == parsed  # what the poller stores keeps the login
    assert credentials_for(parsed, "busybox:1") is None


@pytest.mark.parametrize(("image", "host"), [
    ("busybox:1", "docker.io"), ("library/busybox:1", "docker.io"), ("team/app:1", "docker.io"),
    (f"{HOST}/team/app:1", HOST), ("localhost/app:1", "localhost"), ("ghcr.io/o/app@sha256:" + "a" * 64, "ghcr.io"),
])
def test_the_registry_host_of_an_image(image, host):
    assert registry_host(image) == host


@pytest.mark.parametrize(("registries", "reason"), [
    ([], "registries: must be an object, not array"),
    ({"host:99999": {"username": "u", "password": "p"}}, "registries.host:99999: is not a registry host"),
    ({"-bad": {"username": "u", "password": "p"}}, "registries.-bad: is not a registry host"),
    ({HOST: {"username": "u"}}, f"registries.{HOST}.password: required field is missing"),
    ({HOST: {"username": "u", "password": 1}}, f"registries.{HOST}.password: must be a string"),
    ({HOST: {"username": "u", "password": "p", "email": "x"}}, f"registries.{HOST}.email: unknown field"),
    ({f"h{n}": {"username": "u", "password": "p"} for n in range(33)}, "registries: 33 entries, more than 32"),
])
def test_a_bad_registries_object_rejects_the_document_naming_the_path(registries, reason):
    with pytest.raises(InvalidTargetState) as refused:
        target({"web": "busybox:1"}, registries)
    assert refused.value.reason.startswith(reason)


# -- pull progress ------------------------------------------------------------------------------------------

def test_progress_follows_the_engines_events_and_counts_only_bytes():
    events = [
        {"status": "Pulling from fleetlet-test/big", "id": "1"},
        {"status": "Already exists", "id": "base"},
        {"status": "Pulling fs layer", "id": "big"},
        {"status": "Downloading", "id": "big", "progressDetail": {"current": 10 * MIB, "total": 64 * MIB}},
        {"status": "Retrying in 5 seconds", "id": "big"},
        {"status": "Downloading", "id": "big", "progressDetail": {"current": 30 * MIB, "total": 64 * MIB}},
    ]
    state = PullState()
    for event in events:
        state = fold(state, event)
    assert (state.downloaded, state.size, state.extracted) == (30 * MIB, 64 * MIB, 0)
    assert fold(state, {"status": "Retrying in 4 seconds", "id": "big"}) == state  # no bytes: no progress
    done = fold(fold(state, {"status": "Download complete", "id": "big"}), {"status": "Pull complete", "id": "big"})
    assert (done.downloaded, done.extracted) == (64 * MIB, 64 * MIB)
    with pytest.raises(PullFailed, match="unauthorized"):
        fold(state, {"error": "unauthorized: authentication required"})


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["Downloading", "Extracting", "Waiting"]),
                          st.integers(-5, 10 ** 9), st.integers(-5, 10 ** 9))))
def test_progress_never_goes_back(events):
    state, downloaded = PullState(), 0
    for layer, status, current, total in events:
        state = fold(state, {"status": status, "id": layer, "progressDetail": {"current": current, "total": total}})
        assert state.downloaded >= downloaded >= 0
        downloaded = state.downloaded


def test_percent_is_never_100_before_the_end():
    assert [percent(0, 0), percent(5, 10), percent(10, 10), percent(11, 10)] == [0, 50, 99, 99]


# -- disk preflight -----------------------------------------------------------------------------------------

def test_only_layers_the_engine_lacks_count_and_the_refusal_gives_the_figures():
    plan = LayerPlan(sizes=(2 * MIB, 64 * MIB + 1), diff_ids=("sha256:base", "sha256:big"))
    assert needed_bytes(plan, {"sha256:base"}) == 64 * MIB + 1
    assert needed_bytes(plan, {"sha256:base", "sha256:big"}) == 0
    assert needed_bytes(LayerPlan((1, 2), ()), {"sha256:base"}) == 3  # no diff ids: every layer counts
    assert refusal(64 * MIB, 1000 * MIB, 256) is None
    assert refusal(64 * MIB + 1, 300 * MIB, 256) == \
        "not enough disk space: needs 65 MB, 44 MB free (beyond the 256 MB kept in reserve)"
    assert refusal(MIB, 10 * MIB, 100) == \
        "not enough disk space: needs 1 MB, 0 MB free (beyond the 100 MB kept in reserve)"


def test_references_split_into_host_repository_and_tag_or_digest():
    assert split_reference(f"{HOST}/team/app:2") == (HOST, "team/app", "2")
    assert split_reference("busybox:1") == ("docker.io", "library/busybox", "1")
    assert split_reference(f"{HOST}/app@sha256:{'b' * 64}") == (HOST, "app", f"sha256:{'b' * 64}")


# -- cleanup ------------------------------------------------------------------------------------------------

def test_cleanup_keeps_the_target_the_previous_release_images_in_use_and_what_it_did_not_pull():
    old, previous, current, foreign, used = (f"{HOST}/app:{n}" for n in range(1, 6))
    engine = EngineState(images=frozenset({old, previous, current, foreign, used}), images_in_use=frozenset({used}))
    keep = images_to_keep(target({"web": current}), [target({"web": previous})])
    assert images_to_remove({old, previous, current, used}, keep, engine) == [old]
    assert images_to_remove({f"{HOST}/gone:1"}, keep, engine) == []  # not in the engine any more


def test_the_ledger_keeps_the_last_applied_target_and_the_one_before():
    first, second, third = ({"apps": {}, "purge_volumes": [name]} for name in ("a", "b", "c"))
    ledger = ImageLedger().with_applied('"1"', first).with_applied('"1"', first).with_applied('"2"', second)
    assert [applied.etag for applied in ledger.applied] == ['"1"', '"2"']
    ledger = ledger.with_applied('"3"', third).with_pull("x:1").with_pull("y:1").without("x:1")
    assert [applied.etag for applied in ledger.applied] == ['"2"', '"3"'] and ledger.pulled == {"y:1"}
    assert [release.purge_volumes for release in ledger.previous_releases()] == [("b",)]
    assert ledger_from_json(ledger_to_json(ledger)) == ledger
    assert ledger_from_json("garbage") == ImageLedger() == ledger_from_json({"pulled": "x", "applied": [1]})
    with_login = ledger.with_applied('"4"', {"apps": {}, "registries": {HOST: {"username": "u", "password": "p"}}})
    assert with_login.applied[-1].document == {"apps": {}}  # a login is kept with the target in force only


names = st.sets(st.sampled_from([f"{HOST}/app:{n}" for n in range(8)]))


@given(names, names, names, names, names)
def test_cleanup_never_removes_what_it_must_keep(pulled, current, previous, present, in_use):
    engine = EngineState(images=frozenset(present), images_in_use=frozenset(in_use))
    kept = [target({f"s{n}": image for n, image in enumerate(sorted(previous))})] if previous else []
    keep = images_to_keep(target({f"s{n}": image for n, image in enumerate(sorted(current))}), kept)
    removed = set(images_to_remove(pulled, keep, engine))
    assert removed <= pulled & present
    assert not removed & (current | previous | in_use)
    assert removed == (pulled & present) - current - previous - in_use


# -- reports and settings -----------------------------------------------------------------------------------

def test_progress_is_shown_on_the_pulling_service_only():
    state = {"apps": {"1": {"update_status": "downloading", "services": {
        "web": {"image": "a", "status": "downloading", "progress": {"bytes": 1, "total": 2, "percent": 50}},
        "db": {"image": "b", "status": "downloading"}}}}, "engine": {"status": "ok"}}
    shown = with_progress(state, {("1", "db"): (30, 0, 60)})
    assert shown["apps"]["1"]["services"] == {
        "web": {"image": "a", "status": "downloading"},
        "db": {"image": "b", "status": "downloading", "progress": {"bytes": 30, "total": 60, "percent": 50}}}
    assert shown["engine"] == {"status": "ok"}


@pytest.mark.parametrize(("value", "ok"), [("10m", True), ("512k", True), ("1g", True), ("0m", False),
                                           ("10", False), ("10mb", False), ("", False)])
def test_log_sizes_are_spelled_as_the_engine_takes_them(value, ok):
    assert (size_text(value) is None) == ok
