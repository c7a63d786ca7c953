"""The device-side shadow protocol (actors.shadow_sync): parsing, and the per-shadow state machine."""
from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import conf
from actors.shadow.payloads import (
    Accepted,
    Delta,
    Document,
    PayloadError,
    PayloadLimits,
    Rejected,
    parse_emqx_view,
    parse_payload,
    subscriptions,
)
from actors.shadow.sync import (
    Publish,
    ReadOverHttp,
    Recovered,
    ShadowSync,
    SyncSettings,
    as_stored,
)
from messages.bus.outbox import AckReport, ClearError, EnqueueReport, RecordError
from messages.bus.shadow import ShadowDeltaApplied, ShadowDeltaUpdated, ShadowDocumentSeen
from messages.protocol.patches import apply_patch, report_patch
from messages.protocol.shadow_topics import shadow_topics
from messages.transport.backoff import backoff_delay

SETTINGS = SyncSettings(profile="aws", names=("",), report_timeout=5.0, read_timeout=5.0, apply_timeout=10.0,
                        conflict_retries=2, report_version=True, retry_min=0.5, retry_max=8.0,
                        limits=PayloadLimits(max_bytes=4096, max_depth=8))
TOPICS = shadow_topics("aws", "dev")


def machine(handlers=("app",), recovered=None, **changes) -> ShadowSync:
    return ShadowSync("dev", "", dataclasses.replace(SETTINGS, **changes), handlers, "t-", recovered or Recovered())


def only(effects, kind):
    return [e for e in effects if isinstance(e, kind)]


def synced(sync: ShadowSync, document: Document, now: float = 0.0) -> list:
    """Connect and answer the read with ``document``; the effects of the answer."""
    (get,) = only(sync.link_up(now), Publish)
    return sync.receive(dataclasses.replace(document, client_token=get.payload["clientToken"]), now)


def applied(reported, version, failures=None, handler="app"):
    return ShadowDeltaApplied(handler, "dev", "", version, reported, failures or {})


def report_sent(sync: ShadowSync, report_id: int, patch: dict, now: float = 0.0) -> dict:
    (update,) = only(sync.on_report_pending(report_id, patch, now), Publish)
    assert update.topic == sync.topics.update
    return update.payload


# -- payloads -------------------------------------------------------------------------------------------------

def test_parses_each_operation():
    limits = SETTINGS.limits
    assert parse_payload("update/delta", b'{"version": 5, "state": {"t": 24}, "metadata": {}}', limits) == \
        Delta(5, {"t": 24})
    assert parse_payload("get/accepted", b'{"state": {"desired": {"a": 1}, "delta": {"a": 1}}, "version": 2,'
                                         b' "clientToken": "x"}', limits) == Document(2, {"a": 1}, {}, "x")
    assert parse_payload("update/accepted", b'{"version": 9, "clientToken": "x"}', limits) == Accepted(9, "x")
    assert parse_payload("update/rejected", b'{"code": 409, "message": "Version conflict", "clientToken": "x"}',
                         limits) == Rejected(409, "Version conflict", "x")


@pytest.mark.parametrize("operation, payload, reason", [
    ("update/delta", b"{not json", "not JSON"),
    ("update/delta", b"\xff\xfe", "not UTF-8"),
    ("update/delta", b"[1, 2]", "expected a JSON object"),
    ("update/delta", b'{"version": 1, "state": {"a": NaN}}', "not JSON"),
    ("update/delta", b'{"version": 1, "state": 3}', "state object"),
    ("update/delta", b'{"version": true, "state": {}}', "version"),
    ("update/delta", b'{"version": -1, "state": {}}', "version"),
    ("update/delta", b'{"version": 1.5, "state": {}}', "version"),
    ("update/delta", b'{"state": {}}', "version"),
    ("update/delta", b'{"version": 1, "state": ' + b'{"a": ' * 20 + b"1" + b"}" * 21, "nested deeper"),
    ("update/delta", b'{"version": 1, "state": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "exceeds"),
    ("get/accepted", b'{"version": 1, "state": {"desired": [1]}}', "desired must be an object"),
    ("get/accepted", b'{"version": 1, "clientToken": 7}', "clientToken"),
    ("get/rejected", b'{"code": 200, "message": "ok"}', "code"),
    ("update/rejected", b'{"code": 409, "message": 5}', "message"),
    ("update/documents", b"{}", "not a topic"),
])
def test_refuses_malformed_payloads_with_a_reason(operation, payload, reason):
    with pytest.raises(PayloadError, match=reason):
        parse_payload(operation, payload, SETTINGS.limits)


def test_deep_nesting_beyond_the_decoder_is_a_payload_error():
    deep = b'{"version": 1, "state": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    with pytest.raises(PayloadError, match="nested deeper"):
        parse_payload("update/delta", deep, PayloadLimits(max_bytes=10**6))


@settings(max_examples=300, deadline=None)
@given(operation=st.sampled_from(["update/delta", "get/accepted", "get/rejected", "update/accepted",
                                  "update/rejected"]),
       payload=st.one_of(st.binary(max_size=200),
                         st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                                      lambda inner: st.lists(inner, max_size=3) |
                                      st.dictionaries(st.sampled_from(["state", "version", "code", "message",
                                                                       "clientToken", "desired", "reported"]),
                                                      inner, max_size=4)).map(
                             lambda v: json.dumps(v).encode())))
def test_any_input_parses_or_raises_payload_error_only(operation, payload):
    try:
        parse_payload(operation, payload, SETTINGS.limits)
    except PayloadError:
        pass


def test_emqx_view_is_read_as_a_document():
    body = {"reported": {"a": 1}, "desired": {"a": 2}, "delta": {"a": 2}, "version": 7,
            "updatedAt": "2025-01-01T00:00:00Z"}
    assert parse_emqx_view(body, "tok") == Document(7, {"a": 2}, {"a": 1}, "tok")
    with pytest.raises(PayloadError):
        parse_emqx_view([], "tok")


def test_subscribes_to_what_each_profile_needs_and_nothing_broader():
    aws = subscriptions("aws", TOPICS)
    assert set(aws) == {TOPICS.update_delta, TOPICS.update_accepted, TOPICS.update_rejected,
                        TOPICS.get_accepted, TOPICS.get_rejected}
    emqx = subscriptions("emqx", shadow_topics("emqx", "dev"))
    assert all(topic.startswith("$emqx/things/dev/shadow/update/") for topic in emqx) and len(emqx) == 3
    assert not any("#" in topic or "+" in topic for topic in aws + emqx)


def test_settings_are_checked_at_the_boundary():
    config = conf.load("agent")
    assert SyncSettings.from_config(config).names == ("",)
    for key, value, message in [("profile", "gcp", "shadow.profile"), ("names", ["x", "x"], "distinct"),
                                ("names", ["bad/name"], "shadow.names"), ("report_timeout", 0.0, "positive")]:
        broken = {**config, "shadow": {**config["shadow"], key: value}}
        with pytest.raises(conf.ConfigError, match=message):
            SyncSettings.from_config(broken)
    emqx_named = {**config, "shadow": {**config["shadow"], "profile": "emqx", "names": ["", "net"]}}
    with pytest.raises(conf.ConfigError, match="only the classic shadow"):
        SyncSettings.from_config(emqx_named)


@settings(max_examples=200, deadline=None)
@given(expected=st.dictionaries(st.sampled_from("abcd"), st.integers(0, 3) | st.dictionaries(
           st.sampled_from("xy"), st.integers(0, 3), min_size=1, max_size=2), max_size=4),  # no {}: as stored
       actual=st.dictionaries(st.sampled_from("abc"), st.none() | st.integers(0, 3) | st.dictionaries(
           st.sampled_from("xy"), st.integers(0, 3), max_size=2), max_size=3))
def test_report_patch_brings_the_cloud_to_the_actual_state_and_leaves_other_keys(expected, actual):
    patch = report_patch(expected, as_stored(actual))
    after = apply_patch(expected, patch)
    for key, value in actual.items():
        if value is None or value == {}:  # the device does not have it: absent in the cloud too
            assert key not in after
        else:
            assert after[key] == value
    for key in set(expected) - set(actual):
        assert after[key] == expected[key]
    assert report_patch(after, as_stored(actual)) == {}  # nothing left to say: no second report


def test_backoff_grows_to_its_cap_with_jitter_in_the_upper_half():
    assert [backoff_delay(n, 0.5, 4.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert backoff_delay(3, 0.5, 4.0, fraction=0.0) == 1.0
    with pytest.raises(ValueError):
        backoff_delay(0, 0.5, 4.0)


# -- the state machine ------------------------------------------------------------------------------------------

def test_nothing_is_sent_before_the_subscriptions_are_acknowledged_then_a_read():
    sync = machine()
    assert sync.tick(1.0) == []
    assert sync.on_report_pending(1, {"a": 1}, 1.0) == []
    (get,) = sync.link_up(2.0)
    assert get.topic == TOPICS.get and get.payload["clientToken"].startswith("t-")


def test_a_delta_from_the_read_is_applied_reported_and_acknowledged():
    sync = machine()
    effects = synced(sync, Document(3, {"t": 24, "mode": "cool"}, {"t": 20, "mode": "cool", "fan": 1}, None))
    (seen,) = only(effects, ShadowDocumentSeen)
    assert seen.version == 3 and seen.document["state"]["desired"] == {"t": 24, "mode": "cool"}
    (delta,) = only(effects, ShadowDeltaUpdated)
    assert (delta.version, delta.delta, delta.desired) == (3, {"t": 24}, {"t": 24, "mode": "cool"})

    effects = sync.on_applied(applied({"t": 24, "mode": "cool"}, 3), 1.0)
    assert effects == [EnqueueReport("shadow:dev/", {"t": 24})]  # only what changed
    payload = report_sent(sync, 11, {"t": 24}, 1.0)
    assert payload["state"] == {"reported": {"t": 24}} and payload["version"] == 3
    effects = sync.receive(Accepted(4, payload["clientToken"]), 1.5)
    assert only(effects, AckReport) == [AckReport("shadow:dev/", 11, {"t": 24, "mode": "cool", "fan": 1})]
    assert sync.held == 4 and sync.sender.pending is None


def test_tokens_are_fresh_and_answers_to_other_clients_are_ignored():
    sync = machine()
    synced(sync, Document(1, {}, {}, None))
    payload = report_sent(sync, 1, {"a": 1})
    assert sync.receive(Accepted(2, "someone-else"), 0.5) == []
    assert sync.receive(Rejected(409, "Version conflict", None), 0.5) == []
    assert sync.report is not None and sync.report.client_token == payload["clientToken"]


def test_stale_deltas_are_dropped_equal_versions_are_not():
    sync = machine(handlers=())
    synced(sync, Document(5, {}, {}, None))
    assert only(sync.receive(Delta(4, {"a": 1}), 1.0), ShadowDeltaUpdated) == []
    assert sync.stale_dropped == 1
    assert only(sync.receive(Delta(5, {"a": 2}), 1.0), ShadowDeltaUpdated)[0].delta == {"a": 2}


def read_token(effects) -> str | None:
    gets = [e for e in only(effects, Publish) if e.topic == TOPICS.get]
    return gets[0].payload["clientToken"] if gets else None


def test_spoofed_far_future_deltas_do_not_wedge_the_shadow():
    """Deltas with a far-future version make every real one look stale; a stale delta asks for a read, and
    the read (authoritative) puts the version right, so the next real change is applied."""
    sync = machine(handlers=())
    synced(sync, Document(5, {}, {}, None))
    for index in range(3):
        sync.receive(Delta(10**12 + index, {"spoof": index}), 1.0)
    token = read_token(sync.receive(Delta(6, {"level": 1}), 2.0))  # a real change, dropped as stale...
    assert token is not None  # ...but it makes the device read the shadow
    sync.receive(Document(6, {"level": 1}, {}, token), 2.1)
    assert sync.held == 6
    assert only(sync.receive(Delta(7, {"level": 2}), 2.2), ShadowDeltaUpdated)[0].delta == {"level": 2}


def test_reads_asked_for_by_stale_deltas_are_rate_bounded():
    sync = machine(handlers=())
    synced(sync, Document(5, {}, {}, None))
    reads = []
    now = 1.0
    for _ in range(200):  # a flood of stale deltas over 10 s
        effects = sync.receive(Delta(1, {"a": 1}), now)
        if (token := read_token(effects)) is not None:
            reads.append(now)
            sync.receive(Document(5, {}, {}, token), now)
        now += 0.05
    assert 1 <= len(reads) <= 11
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(reads, reads[1:], strict=False))


def test_a_report_refused_for_good_makes_the_device_read_the_shadow():
    sync = machine()
    synced(sync, Document(5, {}, {}, None))
    payload = report_sent(sync, 1, {"a": 1}, 1.0)
    effects = sync.receive(Rejected(400, "Bad version", payload["clientToken"]), 1.1)
    assert only(effects, AckReport)  # dropped: resending would be refused forever
    assert read_token(effects + sync.tick(2.2)) is not None


def test_a_restarted_store_makes_the_shadow_resync_its_outbox_and_read():
    sync = machine()
    synced(sync, Document(5, {}, {"a": 0}, None))
    enqueue = only(sync.on_applied(applied({"a": 1}, 5), 1.0), EnqueueReport)
    assert enqueue and sync.sender.expected == {"a": 1}
    effects = sync.store_reopened(None, 2.0)  # the enqueued report never became durable
    assert sync.sender.expected == {"a": 0}
    token = read_token(effects)
    assert token is not None
    sync.receive(Document(5, {"a": 1}, {"a": 0}, token), 2.1)  # desired differs from reported: apply, report
    again = only(sync.on_applied(applied({"a": 1}, 5), 2.2), EnqueueReport)
    assert again and again[0].patch == {"a": 1}


def test_deltas_arriving_during_an_apply_are_coalesced_newest_wins():
    sync = machine()
    synced(sync, Document(1, {}, {}, None))
    first = only(sync.receive(Delta(2, {"a": 1}), 1.0), ShadowDeltaUpdated)
    assert [d.version for d in first] == [2]
    for version in (4, 3, 5, 5):
        assert only(sync.receive(Delta(version, {"a": version}), 1.1), ShadowDeltaUpdated) == []
    after = only(sync.on_applied(applied({"a": 1}, 2), 1.2), ShadowDeltaUpdated)
    assert [(d.version, d.delta) for d in after] == [(5, {"a": 5})]
    assert only(sync.on_applied(applied({"a": 5}, 5), 1.3), ShadowDeltaUpdated) == []


@settings(max_examples=150, deadline=None)
@given(versions=st.lists(st.integers(1, 30), min_size=1, max_size=25),
       answer_after=st.lists(st.booleans(), min_size=25, max_size=25))
def test_out_of_order_and_duplicate_deltas_apply_in_version_order_and_end_on_the_newest(versions, answer_after):
    sync = machine()
    synced(sync, Document(0, {}, {}, None))
    dispatched = []

    def note(effects):
        dispatched.extend(d.version for d in only(effects, ShadowDeltaUpdated))

    for version, answer in zip(versions, answer_after, strict=False):
        note(sync.receive(Delta(version, {"v": version}), 1.0))
        if answer and sync.apply is not None:
            note(sync.on_applied(applied({"v": sync.apply.version}, sync.apply.version), 1.0))
    while sync.apply is not None:
        note(sync.on_applied(applied({"v": sync.apply.version}, sync.apply.version), 1.0))
    assert dispatched == sorted(dispatched)
    assert dispatched[-1] == max(versions)
    assert sync.sender.expected == {"v": max(versions)}


def test_a_missing_shadow_is_created_from_the_actual_state_without_a_version():
    sync = machine()
    (get,) = sync.link_up(0.0)
    effects = sync.receive(Rejected(404, "No shadow exists with name: 'dev'", get.payload["clientToken"]), 0.1)
    (request,) = only(effects, ShadowDeltaUpdated)
    assert (request.version, request.delta) == (0, {})
    assert sync.on_applied(applied({"t": 21, "mode": None}, 0), 0.2) == [EnqueueReport("shadow:dev/", {"t": 21})]
    payload = report_sent(sync, 1, {"t": 21})
    assert "version" not in payload
    sync.receive(Accepted(1, payload["clientToken"]), 0.3)
    assert sync.exists and sync.held == 1


def test_a_delta_after_a_missing_shadow_proves_it_exists_so_reports_carry_the_version():
    sync = machine()
    (get,) = sync.link_up(0.0)
    sync.receive(Rejected(404, "No shadow exists with name: 'dev'", get.payload["clientToken"]), 0.1)
    sync.on_applied(applied({}, 0), 0.2)
    sync.receive(Delta(1, {"t": 22}), 0.3)  # someone created it meanwhile
    sync.on_applied(applied({"t": 22}, 1), 0.4)
    assert report_sent(sync, 1, {"t": 22})["version"] == 1


def test_a_version_conflict_reads_again_and_retries_within_the_bound():
    sync = machine()
    synced(sync, Document(3, {}, {}, None))
    payload = report_sent(sync, 1, {"a": 1})
    for attempt in range(1, SETTINGS.conflict_retries + 2):
        effects = sync.receive(Rejected(409, "Version conflict", payload["clientToken"]), attempt)
        (get,) = only(effects, Publish)
        assert get.topic == TOPICS.get
        (update,) = only(sync.receive(Document(3 + attempt, {}, {}, get.payload["clientToken"]), attempt), Publish)
        payload = update.payload
        if attempt <= SETTINGS.conflict_retries:
            assert payload["version"] == 3 + attempt
            assert only(effects, RecordError) == []
        else:
            assert "version" not in payload  # the bound is reached: the device's own state goes through
            assert only(effects, RecordError)[0].key == "report"
    effects = sync.receive(Accepted(9, payload["clientToken"]), 10.0)
    assert ClearError("shadow:dev/", "report") in effects and sync.conflicts == 0


def test_an_unanswered_report_is_resent_with_a_fresh_token_and_a_late_answer_is_ignored():
    sync = machine()
    synced(sync, Document(3, {}, {}, None))
    first = report_sent(sync, 1, {"a": 1}, now=0.0)
    assert only(sync.tick(4.9), Publish) == []
    assert only(sync.tick(5.0), Publish) == []  # timed out; resent after a short backoff
    (again,) = only(sync.tick(5.5), Publish)
    assert again.payload["clientToken"] != first["clientToken"]
    assert again.payload["state"] == first["state"]
    assert sync.receive(Accepted(4, first["clientToken"]), 6.0) == []
    assert only(sync.receive(Accepted(4, again.payload["clientToken"]), 6.0), AckReport)


def test_a_report_refused_for_good_is_dropped_and_recorded_not_resent():
    sync = machine()
    synced(sync, Document(3, {}, {}, None))
    payload = report_sent(sync, 4, {"big": "x" * 100})
    effects = sync.receive(Rejected(413, "The payload exceeds the maximum size allowed", payload["clientToken"]), 1.0)
    assert only(effects, AckReport) == [AckReport("shadow:dev/", 4, {})]
    assert "413" in only(effects, RecordError)[0].message
    assert only(sync.tick(100.0), Publish) == []


def test_transient_rejections_back_off_then_retry():
    sync = machine()
    synced(sync, Document(3, {}, {}, None))
    payload = report_sent(sync, 1, {"a": 1})
    assert only(sync.receive(Rejected(429, "Too Many Requests", payload["clientToken"]), 1.0), Publish) == []
    assert only(sync.tick(1.4), Publish) == []
    assert only(sync.tick(1.5), Publish)[0].topic == TOPICS.update


def test_a_value_the_device_cannot_apply_is_reported_as_it_is_recorded_once_and_never_looped():
    sync = machine()
    synced(sync, Document(3, {"t": 40}, {"t": 20}, None))
    effects = sync.on_applied(applied({"t": 30}, 3, {"t": "40 is outside 16..30; applied 30"}), 1.0)
    assert only(effects, EnqueueReport) == [EnqueueReport("shadow:dev/", {"t": 30})]
    records = [(e.key, e.message) for e in only(effects, RecordError)]
    assert records == [("desired.t", "40 is outside 16..30; applied 30")]
    payload = report_sent(sync, 1, {"t": 30})
    sync.receive(Accepted(4, payload["clientToken"]), 1.5)
    # The cloud publishes the delta again after that report; the same answer must cost nothing.
    only(sync.receive(Delta(4, {"t": 40}), 2.0), ShadowDeltaUpdated)
    effects = sync.on_applied(applied({"t": 30}, 4, {"t": "40 is outside 16..30; applied 30"}), 2.1)
    assert effects == []
    # Once the value is applicable the record is cleared.
    only(sync.receive(Delta(5, {"t": 25}), 3.0), ShadowDeltaUpdated)
    effects = sync.on_applied(applied({"t": 25}, 5), 3.1)
    assert ClearError("shadow:dev/", "desired.t") in effects


def test_a_key_no_handler_applies_is_recorded_and_cleared_when_no_longer_desired():
    sync = machine()
    synced(sync, Document(3, {"t": 24, "ghost": 1}, {}, None))
    effects = sync.on_applied(applied({"t": 24}, 3), 1.0)
    records = [(e.key, e.message) for e in only(effects, RecordError)]
    assert records == [("unhandled", "no handler applies 1 desired key(s): ghost")]
    sync.link_down()
    effects = synced(sync, Document(6, {"t": 24}, {"t": 24}, None), 2.0)
    assert ClearError("shadow:dev/", "unhandled") in effects


def test_rows_per_unknown_key_an_older_agent_left_are_cleared_at_start():
    recovered = Recovered(desired={"ghost": 1}, errors={"desired.ghost": "no handler applies this key",
                                                        "desired.t": "40 is outside 16..30; applied 30"})
    effects = machine(recovered=recovered).start(0.0)
    assert only(effects, ClearError) == [ClearError("shadow:dev/", "desired.ghost")]


def test_unknown_keys_make_one_error_row_not_one_per_key():
    sync = machine()
    synced(sync, Document(3, {"t": 24}, {}, None))
    sync.on_applied(applied({"t": 24}, 3), 1.0)
    keys = set()
    for version in range(4, 40):
        sync.receive(Delta(version, {f"k{version}": 1}), float(version))
        effects = sync.on_applied(applied({}, version), float(version))
        keys |= {e.key for e in only(effects, RecordError)}
    assert keys == {"unhandled"}
    assert sync.errors["unhandled"].startswith("no handler applies 36 desired key(s): k10, k11,")
    assert sync.errors["unhandled"].endswith(", ...")


def test_spoofed_deltas_cannot_grow_the_local_desired_copy_past_the_payload_limit():
    sync = machine(handlers=())
    synced(sync, Document(3, {"t": 24}, {}, None))
    for version in range(4, 400):
        effects = sync.receive(Delta(version, {f"key-{version}": "x" * 40}), float(version))
        size = len(json.dumps(sync.desired, separators=(",", ":")))
        assert size <= SETTINGS.limits.max_bytes
    assert "more than 4096; reading the shadow" in sync.errors["input"]
    assert [p.topic for p in only(effects, Publish)] in ([], [sync.topics.get])
    assert sync.read is not None  # the read's document replaces the copy


def test_a_silent_handler_is_asked_once_more_then_recorded_and_the_next_delta_goes_out():
    sync = machine(handlers=("app", "other"))
    synced(sync, Document(3, {"t": 24}, {}, None))
    sync.on_applied(applied({"t": 24}, 3), 1.0)
    sync.receive(Delta(4, {"t": 25}), 2.0)
    (again,) = only(sync.tick(10.0), ShadowDeltaUpdated)
    assert again.version == 3
    effects = sync.tick(20.0)
    assert [e.key for e in only(effects, RecordError)] == ["handler:other"]
    assert [d.version for d in only(effects, ShadowDeltaUpdated)] == [4]


def test_a_handler_function_that_fails_counts_as_an_answer():
    sync = machine(handlers=("app", "mod:fn"))
    synced(sync, Document(3, {"t": 24}, {}, None))
    sync.on_applied(applied({"t": 24}, 3), 1.0)
    effects = sync.on_handler_failed("mod:fn", 3, "raised KeyError: 'x'", 1.1)
    assert [e.key for e in only(effects, RecordError)] == ["handler:mod:fn"]
    assert sync.apply is None


def test_losing_the_link_forgets_what_was_in_flight_and_reads_before_resending():
    sync = machine()
    synced(sync, Document(3, {}, {}, None))
    first = report_sent(sync, 1, {"a": 1})
    sync.link_down()
    assert sync.receive(Accepted(4, first["clientToken"]), 1.0) == []
    (get,) = sync.link_up(2.0)
    assert get.topic == TOPICS.get
    (update,) = only(sync.receive(Document(4, {}, {"a": 1}, get.payload["clientToken"]), 2.1), Publish)
    assert update.payload["state"] == {"reported": {"a": 1}} and update.payload["version"] == 4


def test_a_read_older_than_a_delta_received_meanwhile_does_not_roll_back_desired():
    sync = machine(handlers=())
    (get,) = sync.link_up(0.0)
    sync.receive(Delta(8, {"t": 25}), 0.1)
    sync.receive(Document(7, {"t": 24}, {}, get.payload["clientToken"]), 0.2)
    assert sync.desired == {"t": 25} and sync.held == 8 and sync.read is None


def test_a_read_below_the_held_version_is_authoritative_when_nothing_newer_came():
    sync = machine(recovered=Recovered(desired={"t": 1}, reported={"t": 1}, version=500))
    synced(sync, Document(2, {"t": 3}, {"t": 1}, None))
    assert sync.held == 2 and sync.desired == {"t": 3}


def test_an_accepted_version_that_skips_an_update_triggers_a_read():
    sync = machine(handlers=(), report_version=False)
    synced(sync, Document(3, {}, {}, None))
    payload = report_sent(sync, 1, {"a": 1})
    (get,) = only(sync.receive(Accepted(6, payload["clientToken"]), 1.0), Publish)
    assert get.topic == TOPICS.get


def test_the_local_copy_is_applied_whole_at_start_without_any_link():
    recovered = Recovered(desired={"t": 24, "mode": "eco"}, reported={"t": 20, "mode": "eco"}, version=9,
                          outbox=(3, {"fan": 2}))
    sync = machine(recovered=recovered)
    (delta,) = sync.start(0.0)
    assert (delta.version, delta.delta) == (9, {"t": 24, "mode": "eco"})
    assert sync.sender.expected == {"t": 20, "mode": "eco", "fan": 2}
    (get,) = sync.link_up(1.0)  # the pending report waits for the read
    (update,) = only(sync.receive(Document(9, recovered.desired, recovered.reported, get.payload["clientToken"]),
                                  1.1), Publish)
    assert update.payload["state"] == {"reported": {"fan": 2}}


def test_reads_time_out_and_retry_with_backoff():
    sync = machine()
    (first,) = sync.link_up(0.0)
    effects = sync.tick(5.0)
    assert [e.key for e in only(effects, RecordError)] == ["read"] and only(effects, Publish) == []
    (second,) = only(sync.tick(5.5), Publish)
    assert second.payload["clientToken"] != first.payload["clientToken"]
    effects = sync.receive(Document(1, {}, {}, second.payload["clientToken"]), 5.6)
    assert ClearError("shadow:dev/", "read") in effects


def test_malformed_input_is_recorded_at_most_every_ten_seconds():
    sync = machine()
    assert len(only(sync.receive_malformed(3, "x: not JSON", 0.0), RecordError)) == 1
    assert sync.receive_malformed(50, "x: not JSON", 5.0) == []
    (record,) = only(sync.receive_malformed(1, "y: too deep", 10.0), RecordError)
    assert record.key == "input" and record.message.startswith("dropped 51 malformed")


def test_the_emqx_profile_reads_over_https():
    sync = ShadowSync("dev", "", dataclasses.replace(SETTINGS, profile="emqx"), ("app",), "t-")
    (read,) = sync.link_up(0.0)
    assert read == ReadOverHttp("dev", "t-1")
    effects = sync.receive(Document(2, {"t": 24}, {}, "t-1"), 0.1)
    assert only(effects, ShadowDeltaUpdated)[0].delta == {"t": 24}
    payload = report_sent(sync, 1, {"t": 24})
    assert sync.topics.update == "$emqx/things/dev/shadow/update" and payload["version"] == 2
