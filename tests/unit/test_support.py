"""The test support's own parts: reading a JSON-lines file another process is appending to, and waiting."""
from __future__ import annotations

import itertools
import json
import socket
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.polling import wait_for, wait_quiet
from tests.support.ports import free_admin_port, outside
from tests.support.probe_actors import complete_lines, recorded_rows

rows = st.lists(st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=8)), max_size=3),
                max_size=6)


@given(rows=rows, ascii_only=st.booleans(), data=st.data())
def test_a_read_at_any_moment_of_an_append_sees_exactly_the_rows_already_complete(rows, ascii_only, data):
    written = b"".join(json.dumps(row, ensure_ascii=ascii_only).encode() + b"\n" for row in rows)
    cut = data.draw(st.integers(0, len(written)), label="bytes written so far")
    seen = [json.loads(line) for line in complete_lines(written[:cut])]
    assert seen == rows[:written[:cut].count(b"\n")]  # never a half row, never a row lost


def test_a_partial_last_line_is_left_for_the_next_read():
    assert complete_lines(b'{"a": 1}\n{"b": "unterminat') == ['{"a": 1}']
    assert complete_lines(b'{"a": 1}\n') == ['{"a": 1}']
    assert complete_lines(b"") == [] and complete_lines(b'{"a"') == []
    assert complete_lines('{"a": "\u2028"}\n'.encode()) == ['{"a": "\u2028"}']  # a row ends at "\n" only


def test_recorded_rows_reads_nothing_before_the_file_exists(tmp_path):
    path = tmp_path / "recorded.jsonl"
    assert recorded_rows(path) == []
    path.write_bytes(b'{"type": "Probe", "seq": 1}\n{"type": "Pro')
    assert recorded_rows(path) == [{"type": "Probe", "seq": 1}]


def test_quiet_means_no_change_for_the_whole_quiet_period():
    changes = iter([1, 1, 2, 2, 3])  # then 3 for ever
    started = time.monotonic()
    changed_last_at = []

    def count():
        value = next(changes, None)
        if value is not None:
            changed_last_at.append(time.monotonic())
            return value
        return 3

    assert wait_quiet(count, quiet=0.2, interval=0.01) == 3
    assert time.monotonic() - changed_last_at[-1] >= 0.2 and time.monotonic() - started < 2


def test_a_count_that_never_settles_fails_at_the_timeout():
    counter = itertools.count()
    with pytest.raises(AssertionError, match="still changing after 0.3 s: polls"):
        wait_quiet(lambda: next(counter), quiet=0.1, timeout=0.3, interval=0.01, what="polls")


def test_wait_for_returns_the_first_truthy_value_or_names_what_it_waited_for():
    values = iter([None, 0, [], {"a": 1}])
    assert wait_for(lambda: next(values), interval=0.001) == {"a": 1}
    with pytest.raises(AssertionError, match="timed out after 0.05 s waiting for the moon"):
        wait_for(lambda: False, timeout=0.05, what="the moon")


@given(low=st.integers(1024, 65535), span=st.integers(0, 40000))
def test_admin_ports_are_never_ones_the_kernel_hands_out_as_source_ports(low, span):
    high = min(65535, low + span)
    ports = outside(low, high)
    assert not ports or ports.stop <= low or ports.start > high  # wholly below or wholly above the range
    assert not ports or (ports.start >= 10000 and ports.stop <= 65536)


def test_a_held_port_is_skipped():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        choices = iter([taken, taken, 23456])
        assert free_admin_port(choose=lambda candidates: next(choices)) == 23456
