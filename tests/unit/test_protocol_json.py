"""The strict JSON decoder and the canonical dump (messages.protocol.json): what is refused, and why."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messages.protocol.json import (
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    JSONInvalid,
    JSONNotUTF8,
    JSONOutOfRange,
    JSONRefused,
    JSONTooDeep,
    JSONTooLarge,
    JSONUnencodable,
    canonical_bytes,
    canonical_text,
    check_value,
    decode,
    encode,
    json_equal,
)

# What every reader of ours takes: 64-bit integers, finite floats, strings that encode as UTF-8.
leaves = (st.none() | st.booleans() | st.integers(INT64_MIN, INT64_MAX)
          | st.floats(allow_nan=False, allow_infinity=False) | st.text(st.characters(blacklist_categories=("Cs",))))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(st.characters(blacklist_categories=("Cs",)), max_size=4), inner,
                                        max_size=4), max_leaves=25)


@pytest.mark.parametrize("text, error", [
    (b'{"a": 1, "a": 2}', JSONInvalid),
    (b'[NaN]', JSONInvalid),
    (b'[Infinity]', JSONInvalid),
    (b'[-Infinity]', JSONInvalid),
    (b'[1e999]', JSONInvalid),  # a float that overflows to inf: parse_constant never sees it
    (b'[-1e999]', JSONInvalid),
    (b'[9223372036854775808]', JSONOutOfRange),
    (b'[-9223372036854775809]', JSONOutOfRange),
    (b'[' + b'9' * 5000 + b']', JSONOutOfRange),  # int() would refuse it with a plain ValueError
    (b'["\\ud800"]', JSONUnencodable),
    (b'{"\\udc00": 1}', JSONUnencodable),
    (b'\xff\xfe', JSONNotUTF8),
    (b'"\xed\xa0\x80"', JSONNotUTF8),  # a surrogate encoded as UTF-8 bytes is not UTF-8
    (b'[' * 100_000, JSONTooDeep),
    (b'{', JSONInvalid),
    (b'', JSONInvalid),
    (b'\xef\xbb\xbf{}', JSONInvalid),
])
def test_refusals(text, error):
    with pytest.raises(error):
        decode(text)
    assert issubclass(error, JSONRefused) and issubclass(error, ValueError)


def test_the_duplicate_key_is_named():
    with pytest.raises(JSONInvalid, match="duplicate key 'b'"):
        decode(b'{"a": {"b": 1, "c": 2, "b": 3}}')


def test_the_64_bit_bounds_are_accepted_and_a_caller_may_raise_the_upper_one():
    assert decode(f"[{INT64_MIN}, {INT64_MAX}]") == [INT64_MIN, INT64_MAX]
    assert decode(b"[18446744073709551615]", int_max=2**64 - 1) == [2**64 - 1]
    with pytest.raises(JSONInvalid):
        decode(b"[18446744073709551616]", int_max=2**64 - 1)


def test_a_valid_surrogate_pair_is_one_character():
    assert decode(b'"\\ud83d\\ude00"') == "\U0001F600"


@pytest.mark.parametrize("depth", [1, 5, MAX_DEPTH])
def test_the_depth_bound_is_exact(depth):
    assert decode("[" * depth + "]" * depth, max_depth=depth) is not None
    with pytest.raises(JSONTooDeep, match=f"nested deeper than {depth} levels"):
        decode("[" * (depth + 1) + "]" * (depth + 1), max_depth=depth)


def test_brackets_inside_strings_do_not_count_as_depth():
    assert decode(b'{"a": "[[[[{{{{\\"[[["}', max_depth=1) == {"a": '[[[[{{{{"[[['}


def test_the_size_bound_is_checked_before_parsing_for_bytes_and_text():
    assert decode(b"[1]", max_bytes=3) == [1]
    with pytest.raises(JSONTooLarge, match="4 bytes exceeds the limit of 3"):
        decode(b"[1 ]", max_bytes=3)
    with pytest.raises(JSONTooLarge):
        decode('"é"', max_bytes=3)  # four bytes in UTF-8


def test_the_canonical_text_sorts_keys_without_whitespace_and_refuses_nan():
    assert canonical_text({"b": 1, "a": [True, None, 1.5, "é"]}) == '{"a":[true,null,1.5,"é"],"b":1}'
    assert canonical_text({"a": "é"}, ascii_only=True) == '{"a":"\\u00e9"}'
    assert canonical_bytes({"a": "é"}) == '{"a":"é"}'.encode()
    with pytest.raises(ValueError):
        canonical_text(float("nan"))


@settings(max_examples=300, deadline=None)
@given(values)
def test_property_what_is_canonical_decodes_back_equal_in_both_forms(value):
    for text in (canonical_text(value), canonical_text(value, ascii_only=True)):
        assert json_equal(decode(text), value)
        assert canonical_text(decode(text)) == canonical_text(value)  # one spelling per value


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=3), st.integers(), max_size=5))
def test_property_key_order_does_not_change_the_canonical_text(mapping):
    reordered = dict(reversed(list(mapping.items())))
    assert canonical_text(reordered) == canonical_text(mapping)


hostile = st.text(alphabet='{}[]":,0123456789.eE-+ \\nultrfasNIyu\u00e9\ud800d', max_size=80)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120) | hostile.map(lambda text: text.encode("utf-8", "surrogatepass")))
def test_property_random_input_either_decodes_to_what_every_reader_takes_or_is_refused(payload):
    try:
        value = decode(payload, max_depth=8)
    except JSONRefused:
        return
    assert json_equal(decode(canonical_bytes(value)), value)  # encodable, and within 64 bits and finite
    assert value == json.loads(payload)  # nothing accepted is read differently from the standard decoder


@given(values, values)
def test_property_json_equality_is_symmetric_and_tells_booleans_from_numbers(a, b):
    assert json_equal(a, b) == json_equal(b, a)
    assert json_equal(a, a)
    assert not json_equal(True, 1) and json_equal(1, 1.0)


@pytest.mark.parametrize("text, error", [
    ('{"a": "\ud800"}', JSONUnencodable),  # text input may carry a raw surrogate, not only an escape
    ('{"a": 12345678901234567890}', JSONOutOfRange),  # 20 digits: the number hooks must be on
    ('{"a": -9223372036854775809}', JSONOutOfRange),  # 19 digits, one past the bound
    ('{"a": 1E400}', JSONInvalid),
    ('{"a": ' + "9" * 400 + ".0}", JSONInvalid),  # a float past its range without an exponent
])
def test_the_quick_paths_never_skip_a_check_that_is_needed(text, error):
    with pytest.raises(error):
        decode(text)


@pytest.mark.parametrize("text", ['{"s": "1e5 and 12345678901234567890"}', '{"s": "\\\\ud800"}', '{"s": "[[[[{{{{"}'])
def test_what_only_looks_risky_inside_a_string_decodes_as_the_standard_decoder_does(text):
    assert decode(text, max_depth=2) == json.loads(text)


# -- check_value: the same rules for values built in memory ----------------------------------------------------

@pytest.mark.parametrize("value, error, where", [
    ({"state": {"desired": {"level": 2**64}}}, JSONOutOfRange, "state.desired.level"),
    ({"a": [1, -(2**63) - 1]}, JSONOutOfRange, "a[1]"),
    ({"a": float("inf")}, JSONInvalid, "a"),
    ({"a": float("nan")}, JSONInvalid, "a"),
    ({"a": "\ud800"}, JSONUnencodable, "a"),
    ({"\udc00": 1}, JSONUnencodable, "key"),
    ({1: "x"}, JSONInvalid, "key 1"),
    ({"a": (1, 2)}, JSONInvalid, "a: tuple"),
    ({"a": b"x"}, JSONInvalid, "a: bytes"),
])
def test_check_value_refuses_what_decode_refuses_naming_the_path(value, error, where):
    with pytest.raises(error, match=where.replace("[", r"\[").replace("]", r"\]")):
        check_value(value)
    with pytest.raises(error):
        encode(value)


def test_check_value_bounds_depth_without_recursion():
    deep: object = 1
    for _ in range(100_000):  # far beyond the interpreter's recursion limit
        deep = [deep]
    with pytest.raises(JSONTooDeep):
        check_value(deep)
    check_value(decode("[" * MAX_DEPTH + "]" * MAX_DEPTH))


@settings(max_examples=200)
@given(values)
def test_property_check_value_accepts_all_that_decode_produces(value):
    check_value(value)
    assert json_equal(decode(encode(value)), value)
    assert json_equal(decode(encode(value, indent=2)), value)


def test_check_value_names_the_first_bad_member_in_document_order():
    with pytest.raises(JSONOutOfRange, match=r"^a\[1\]\.x: ") as caught:
        check_value({"a": [0, {"x": 2**64}], "b": float("inf")})
    assert caught.value.path == "a[1].x"
    with pytest.raises(JSONTooDeep) as deep:
        check_value({"a": [[[]]]}, max_depth=3)
    assert deep.value.path == "a[0][0]"
