"""The `healthcheck` field of a service config, with compose's fields and meaning: `test`, `interval`,
`timeout`, `retries`, `start_period`, `disable`.

`test` is a string (run by the container's shell, CMD-SHELL) or a list starting with CMD, CMD-SHELL or NONE;
durations are compose's ("1m30s", "500ms") or a number of seconds. Everything is normalised to the engine's
form (`Healthcheck`: nanoseconds), so two spellings hash the same.
"""
from __future__ import annotations

import re
from typing import Any

from messages.protocol.target_state import limits
from messages.protocol.target_state.fields import _fail, _require_list, _require_object, _string, _type_name
from messages.protocol.target_state.model import Healthcheck

_FIELDS = ("test", "interval", "timeout", "retries", "start_period", "disable")
_TEST_KINDS = ("CMD", "CMD-SHELL", "NONE")
_UNITS = {"h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
# compose's (Go's) durations: one or more number+unit parts; every digit run bounded.
_DURATION = re.compile(r"(?:\d{1,14}(?:\.\d{1,9})?(?:h|ms|m|s|us|ns))+")
_PART = re.compile(r"(\d{1,14}(?:\.\d{1,9})?)(h|ms|m|s|us|ns)")
MIN_DURATION = 10**6  # the engine refuses intervals under 1 ms
MAX_DURATION = 24 * 3600 * 10**9
MAX_RETRIES = 1000


def parse_healthcheck(value: Any, path: str) -> Healthcheck | None:
    """The normalised health check; None when the field is null (the image's own applies)."""
    if value is None:
        return None
    _require_object(value, path, required=(), optional=_FIELDS)
    disable = value.get("disable", False)
    if not isinstance(disable, bool):
        raise _fail(f"{path}.disable", f"must be a boolean, not {_type_name(disable)}")
    if disable:
        if set(value) - {"disable"}:
            raise _fail(path, "disable: true takes no other field")
        return Healthcheck(("NONE",))
    if "test" not in value:
        raise _fail(f"{path}.test", "required field is missing (or set disable: true)")
    test = _test(value["test"], f"{path}.test")
    if test == ("NONE",):
        return Healthcheck(test)
    return Healthcheck(test, interval=_duration(value.get("interval"), f"{path}.interval"),
                       timeout=_duration(value.get("timeout"), f"{path}.timeout"),
                       retries=_retries(value.get("retries"), f"{path}.retries"),
                       start_period=_duration(value.get("start_period"), f"{path}.start_period"))


def healthcheck_to_json(check: Healthcheck | None) -> dict[str, object] | None:
    """The canonical form: `parse_healthcheck` of it is equal."""
    if check is None:
        return None
    if check.disabled:
        return {"disable": True}
    document: dict[str, object] = {"test": list(check.test)}
    for name in ("interval", "timeout", "start_period"):
        if (nanoseconds := getattr(check, name)) is not None:
            document[name] = f"{nanoseconds}ns"
    if check.retries is not None:
        document["retries"] = check.retries
    return document


def _test(value: Any, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return ("CMD-SHELL", _string(value, path, limits.MAX_STRING_LENGTH))
    items = [_string(item, f"{path}[{index}]", limits.MAX_STRING_LENGTH)
             for index, item in enumerate(_require_list(value, path, limits.MAX_COMMAND_ARGUMENTS))]
    if not items or items[0] not in _TEST_KINDS:
        raise _fail(path, f"must be a string or a list starting with {', '.join(_TEST_KINDS)}")
    if items[0] == "NONE":
        if len(items) > 1:
            raise _fail(path, "NONE takes no arguments")
    elif len(items) < 2 or (items[0] == "CMD-SHELL" and len(items) != 2):
        raise _fail(path, f"{items[0]} needs {'one command' if items[0] == 'CMD-SHELL' else 'a command'}")
    return tuple(items)


def _duration(value: Any, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        nanoseconds = round(value * 10**9) if value <= MAX_DURATION else MAX_DURATION + 1
    elif isinstance(value, str) and _DURATION.fullmatch(value):
        nanoseconds = round(sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(value)))
    else:
        raise _fail(path, f"{value!r} is not a duration (seconds, or like '1m30s', '500ms')")
    if not MIN_DURATION <= nanoseconds <= MAX_DURATION:
        raise _fail(path, f"{value!r} is outside 1ms-24h")
    return nanoseconds


def _retries(value: Any, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRIES:
        raise _fail(path, f"must be an integer from 0 to {MAX_RETRIES}")
    return value
