"""The test support's own pure parts: reading a JSON-lines file another process is appending to."""
from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

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


def test_recorded_rows_reads_nothing_before_the_file_exists(tmp_path):
    path = tmp_path / "recorded.jsonl"
    assert recorded_rows(path) == []
    path.write_bytes(b'{"type": "Probe", "seq": 1}\n{"type": "Pro')
    assert recorded_rows(path) == [{"type": "Probe", "seq": 1}]
