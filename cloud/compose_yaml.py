"""Reading a docker-compose file: YAML as compose reads it, bounded, strict.

PyYAML's `safe_load` with these changes:
- YAML 1.2's scalars, as compose (Go's yaml.v3) reads them: `no`, `on`, `yes` stay strings (`restart: no`
  is the string "no", not false) and `22:22` stays a string (YAML 1.1 reads it as the base-60 number 1342);
- a key given twice in one mapping is refused (YAML allows it and keeps the last silently);
- at most `MAX_FILE_BYTES`, `MAX_DEPTH` nesting, `MAX_ALIASES` alias uses and `MAX_NODES` values once
  aliases are expanded (against "billion laughs": a few aliases of aliases expand exponentially).
Errors are `ComposeError`, naming the line.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

MAX_FILE_BYTES = 1024 * 1024
MAX_ALIASES = 256
MAX_DEPTH = 32
MAX_NODES = 100_000


class ComposeError(ValueError):
    """The compose file cannot be converted; the message names the path (or line) and why."""


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core resolvers, duplicate keys refused, aliases and depth bounded."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise ComposeError(f"more than {MAX_ALIASES} alias uses (*name)")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposeError(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<: *defaults" merges; the keys it brings may be overridden
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise ComposeError(f"line {key_node.start_mark.line + 1}: a key must be a scalar")
                if key in seen:
                    raise ComposeError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 core schema: only these spellings are booleans, numbers or null.
_Loader.yaml_implicit_resolvers = {}
for tag, pattern, first in (
    ("tag:yaml.org,2002:bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("tag:yaml.org,2002:int", r"[-+]?[0-9]{1,19}|0o[0-7]{1,21}|0x[0-9a-fA-F]{1,16}", "-+0123456789"),
    ("tag:yaml.org,2002:float",
     r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.nan|\.NaN|\.NAN", "-+0123456789."),
    ("tag:yaml.org,2002:null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:merge", r"<<", "<"),
):
    _Loader.add_implicit_resolver(tag, re.compile(rf"^(?:{pattern})$"), list(first))


def _construct_int(loader: _Loader, node: Any) -> int:
    text = loader.construct_scalar(node)
    return int(text[2:], 8) if text.startswith("0o") else int(text, 0) if text.startswith("0x") else int(text, 10)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_compose_yaml(data: bytes) -> Any:
    """The YAML document in ``data``, or ComposeError."""
    if len(data) > MAX_FILE_BYTES:
        raise ComposeError(f"the file has {len(data)} bytes, more than {MAX_FILE_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ComposeError(f"not UTF-8 ({error})") from None
    try:
        loader = _Loader(text)
        try:
            document = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        raise ComposeError(f"not valid YAML: {error}") from None
    except RecursionError:
        raise ComposeError(f"nested deeper than {MAX_DEPTH} levels") from None
    _check_expanded_size(document)
    return document


def _check_expanded_size(document: Any) -> None:
    """Count the values as a consumer walking the document would meet them (aliases expanded), stopping at
    the limit: the walk costs at most MAX_NODES steps, whatever the document."""
    pending, seen = [document], 0
    while pending:
        value = pending.pop()
        seen += 1
        if seen > MAX_NODES:
            raise ComposeError(f"expands to more than {MAX_NODES} values (aliases of aliases?)")
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)

