"""The reconciler's generic loop (actors.target.scheduling): what starts next, the per-key retry tracker, the
job pool; and the model helpers they share."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.target.model import (
    ContainerInfo,
    CreateNetwork,
    Pull,
    Remove,
    Start,
    Step,
    containers_by_key,
    describe_step,
)
from actors.target.planner import plan
from actors.target.scheduling import JobPool, RetryTracker, key_text, next_steps, step_identity
from tests.unit.test_planner import IMAGE_1, messy_states, targets

KEYS = st.sampled_from([("1", "a"), ("1", "b"), ("2", "a"), ("2", None)])


def doubling(count: int) -> float:
    return min(10.0, 2.0 * 2 ** (count - 1))


def test_a_key_is_marked_after_max_attempts_and_forgetting_it_says_so():
    retries = RetryTracker(doubling, max_attempts=2)
    first = retries.failed(("1", "a"), "boom", now=100.0)
    assert (first.count, first.error, first.retry_at) == (1, "boom", 102.0)
    assert retries.marked == set() and retries.backing_off(101.0) == {("1", "a")}
    assert retries.backing_off(102.0) == frozenset()  # due exactly at retry_at
    second = retries.failed(("1", "a"), "again", now=110.0)
    assert (second.count, second.retry_at) == (2, 114.0)
    assert retries.marked_errors() == {("1", "a"): "again"}
    assert retries.forget(("1", "a")) is True
    assert retries.forget(("1", "a")) is False  # already forgotten: nothing to clear
    assert retries.keys() == [] and retries.marked_errors() == {}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), KEYS, st.floats(0, 1000)), max_size=40), st.integers(1, 5))
def test_retry_tracker_counts_failures_since_the_last_forget(events, max_attempts):
    retries = RetryTracker(doubling, max_attempts)
    counts: dict = {}
    for is_failure, key, now in events:
        if is_failure:
            counts[key] = counts.get(key, 0) + 1
            failure = retries.failed(key, f"error {counts[key]}", now)
            assert failure.count == counts[key] and failure.retry_at == now + doubling(counts[key])
        else:
            assert retries.forget(key) == (counts.pop(key, 0) >= max_attempts)
        assert set(retries.keys()) == set(counts)
        assert retries.marked == {key for key, count in counts.items() if count >= max_attempts}
    now = events[-1][2] if events else 0.0
    backing_off = retries.backing_off(now)
    assert backing_off == {key for key in counts if retries.failures[key].retry_at > now}
    if backing_off:
        assert retries.next_retry(backing_off) == min(retries.failures[key].retry_at for key in backing_off)


def test_one_read_at_a_time_and_the_wanted_ones_collapse():
    pool = JobPool()
    assert pool.read_may_start()
    read = pool.add(None, "worker-1")
    assert not pool.read_may_start() and not pool.read_may_start()
    assert pool.take_read_wanted() is True and pool.take_read_wanted() is False
    assert pool.jobs[read].read_number == 1 and pool.id_of("worker-1") == read and pool.id_of("nobody") is None
    assert pool.pop(read).step is None and pool.pop(read) is None
    assert pool.read_may_start()


def test_a_step_is_unseen_by_the_reads_launched_before_it_ended():
    pool = JobPool()
    pull = Pull("1", "a", "image missing", image=IMAGE_1)
    start = Start("1", "b", "container exited", container_id="c1")
    first = pool.jobs[pool.add(None, "r1")].read_number
    pool.add(pull, "w1")
    pool.add(start, "w2")
    assert pool.running_steps() == [pull, start] and pool.pulls() == {2: IMAGE_1}
    pool.step_ended(pull)  # while read 1 runs
    second = pool.jobs[pool.add(None, "r2")].read_number
    pool.step_ended(start)  # while read 2 runs
    assert pool.unseen_by(first) == [pull, start]
    assert pool.unseen_by(second) == [start]  # read 2 began after the pull ended: it shows the pull
    assert pool.unseen_by(second + 1) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["read", "end"]), max_size=30))
def test_unseen_steps_are_exactly_those_ended_after_the_read_was_launched(events):
    pool = JobPool()
    ended_at: list[tuple[int, Step]] = []
    for index, event in enumerate(events):
        if event == "read":
            pool.add(None, f"r{index}")
        elif event == "end":
            step = Start("1", f"s{index}", "exited", container_id=str(index))
            pool.step_ended(step)
            ended_at.append((pool.reads_launched, step))
    for read_number in range(1, pool.reads_launched + 1):  # reads end in launch order; each forgets older steps
        assert pool.unseen_by(read_number) == [step for number, step in ended_at if number >= read_number]


def test_steps_doing_the_same_to_the_engine_share_an_identity():
    pull_a = Pull("1", "a", "missing", image=IMAGE_1)
    pull_b = Pull("2", "b", "missing", image=IMAGE_1)
    network_a = CreateNetwork("1", "a", "missing", resource="default")
    network_b = CreateNetwork("1", "b", "missing", resource="default")
    start_a = Start("1", "a", "exited", container_id="c")
    assert step_identity(pull_a) == step_identity(pull_b) and step_identity(network_a) == step_identity(network_b)
    assert step_identity(start_a) != step_identity(Start("1", "b", "exited", container_id="c"))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_next_steps_respect_slots_backoff_and_what_is_underway(data):
    target = data.draw(targets())
    current = data.draw(messy_states(target))
    planned = plan(target, current)
    underway = data.draw(st.lists(st.sampled_from(planned), max_size=3)) if planned else []
    backing_off = frozenset(data.draw(st.sets(KEYS, max_size=2)))
    slots = data.draw(st.integers(-1, 6))
    steps = next_steps(target, current, underway, backing_off, {}, slots)
    assert len(steps) <= max(slots, 0)
    busy = backing_off | {step.key for step in underway}
    assert not any(step.key in busy for step in steps)
    assert not {step_identity(step) for step in steps} & {step_identity(step) for step in underway}


def test_keys_describe_and_grouping_name_things_as_logs_show_them():
    assert key_text(("1", "web")) == "1/web" and key_text(("1", None)) == "1"
    assert describe_step(Pull("1", "web", "missing", image=IMAGE_1)) == f"pull {IMAGE_1}"
    assert describe_step(CreateNetwork("1", "web", "missing", resource="front")) == \
        "create_network 1/front"
    assert describe_step(Remove("1", "web", "gone", container_id="c")) == "remove 1/web"
    one, two = (ContainerInfo(f"c{n}", f"n{n}", "1", "web", "h", IMAGE_1, "exited") for n in (2, 1))
    assert containers_by_key([one, two]) == {("1", "web"): [one, two]}  # the order given is kept
