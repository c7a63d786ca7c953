"""Built-in shadow handler: selected desired keys of one shadow, kept in an application's config file.

Enabled by configuration (``[actors.app_config]``). The file is a JSON object holding the selected
top-level keys; it is replaced atomically (temp file, fsync, rename, fsync of the directory), so a reader
or a power cut sees the old file or the new one, never a mix. What the handler reports is read back from
the file: the device's actual state, which differs from desired when a value is out of its range.

When the delta carries ``requiresRestart: true``, or a value changed while desired holds
``requiresRestart: true``, it publishes RestartServices naming the services that use the file (the
reconciler acts on it). A marker written before the rename makes that restart survive a crash: it is
removed only once persistence says the request is durable (RestartsRecorded), and every start that finds
it publishes the request again (persistence keeps one request per service, so a repeat costs nothing).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile

from actors.runtime.base import FleetletActor
from conf.schema import ConfigError, non_empty, setting
from messages.bus.shadow import ShadowDeltaApplied, ShadowDeltaUpdated
from messages.bus.target import RestartServices, RestartsRecorded

RESTART_MARKER_SUFFIX = ".restart-pending"


def _names(value: tuple[str, ...]) -> str | None:
    return None if all(value) else f"must not hold an empty name, got {list(value)!r}"


def _listed(value: tuple[str, ...]) -> str | None:
    return None if value and all(value) else "must list the desired keys to write"


def _ranges(table) -> tuple[tuple[str, float, float], ...]:
    """``{key = [lowest, highest]}`` as (key, lowest, highest) triples."""
    if not isinstance(table, dict):
        raise ConfigError(f"ranges must be a table of [lowest, highest], got {type(table).__name__}")
    ranges = []
    for key, bounds in table.items():
        if (not isinstance(bounds, list) or len(bounds) != 2 or not all(_is_number(b) for b in bounds)
                or bounds[0] > bounds[1]):
            raise ConfigError(f"ranges.{key} must be [lowest, highest] for one of the keys")
        ranges.append((key, float(bounds[0]), float(bounds[1])))
    return tuple(ranges)


@dataclasses.dataclass(frozen=True)
class AppConfigSettings:
    path: str = setting(rule=non_empty)
    keys: tuple[str, ...] = setting(rule=_listed)
    shadow: str = ""  # "" is the classic shadow
    app_id: str = ""
    services: tuple[str, ...] = setting((), rule=_names)
    restart_key: str = "requiresRestart"
    ranges: tuple[tuple[str, float, float], ...] = setting((), load=_ranges)  # numbers are clamped

    def check(self) -> None:
        for key, _, _ in self.ranges:
            if key not in self.keys:
                raise ConfigError(f"ranges.{key} must be [lowest, highest] for one of the keys")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- pure ------------------------------------------------------------------------------------------------------

def plan_config(current: dict, delta: dict, desired: dict, settings: AppConfigSettings) -> tuple[dict, dict]:
    """The file content after a delta, and the values it cannot take as desired (key -> reason)."""
    content, failures = dict(current), {}
    ranges = {key: (low, high) for key, low, high in settings.ranges}
    for key in settings.keys:
        if key not in delta:
            continue
        value = desired.get(key, delta[key])  # desired has the whole object; the delta only what differs
        if key in ranges:
            low, high = ranges[key]
            if not _is_number(value):
                failures[key] = f"{json.dumps(value)[:80]} is not a number; kept {json.dumps(current.get(key))}"
                continue
            applied = min(max(value, low), high)
            if applied != value:  # a bound: keep an integer an integer
                failures[key] = f"{value:g} is outside {low:g}..{high:g}; applied {applied:g}"
                value = int(applied) if isinstance(value, int) and applied.is_integer() else applied
        content[key] = value
    return content, failures


def reported_state(content: dict, desired: dict, settings: AppConfigSettings) -> dict:
    """The device's actual state for the keys it owns (None: not set), and the restart flag as followed."""
    state = {key: content.get(key) for key in settings.keys}
    state[settings.restart_key] = desired.get(settings.restart_key)
    return state


def wants_restart(delta: dict, desired: dict, changed: bool, settings: AppConfigSettings) -> bool:
    return bool(settings.services) and (
        delta.get(settings.restart_key) is True or (changed and desired.get(settings.restart_key) is True))


# -- the file ----------------------------------------------------------------------------------------------------

def read_config(path: str) -> dict:
    """The file's object; {} when it is missing or not a JSON object (it is rewritten whole on the next change)."""
    try:
        with open(path, "rb") as fh:
            content = json.loads(fh.read())
    except (OSError, ValueError, RecursionError):
        return {}
    return content if isinstance(content, dict) else {}


def write_atomically(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)  # read by the application's containers
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)  # the rename itself must survive a power cut
    finally:
        os.close(directory_fd)


# -- the actor ----------------------------------------------------------------------------------------------------

class AppConfig(FleetletActor):
    Settings = AppConfigSettings
    uses = ("device.thing",)
    options: AppConfigSettings

    def started(self) -> None:
        self.marker = self.options.path + RESTART_MARKER_SUFFIX
        if os.path.exists(self.marker):  # the previous incarnation changed the file and died before telling
            self._restart(read_config(self.marker).get("reason", f"{self.options.path} changed"))

    def on_ShadowDeltaUpdated(self, msg: ShadowDeltaUpdated) -> None:
        if msg.thing_name != self.config["device"]["thing"] or msg.shadow_name != self.options.shadow:
            # Every handler answers every delta, so the listener knows when the apply is over.
            self.publish(ShadowDeltaApplied(self.name, msg.thing_name, msg.shadow_name, msg.version, {}, {}))
            return
        current = read_config(self.options.path)
        content, failures = plan_config(current, msg.delta, msg.desired, self.options)
        changed_keys = sorted(key for key in self.options.keys if content.get(key) != current.get(key))
        restart = wants_restart(msg.delta, msg.desired, bool(changed_keys), self.options)
        what = f"{self.options.path} changed ({', '.join(changed_keys)})" if changed_keys else "a restart was asked for"
        reason = f"{what} at shadow version {msg.version}"
        try:
            if restart:
                write_atomically(self.marker, json.dumps({"reason": reason}).encode())
            if changed_keys:
                write_atomically(self.options.path, json.dumps(content, indent=2, sort_keys=True).encode())
        except OSError as exc:
            self.log.error("cannot write %s: %s", self.options.path, exc)
            failures.update({key: f"cannot write {self.options.path}: {exc.strerror or exc}" for key in changed_keys})
            restart = False
            self._drop_marker()
        actual = read_config(self.options.path)
        self.publish(ShadowDeltaApplied(self.name, msg.thing_name, msg.shadow_name, msg.version,
                                   reported_state(actual, msg.desired, self.options), failures))
        if restart:
            self._restart(reason)

    def _restart(self, reason: str) -> None:
        self.publish(RestartServices(self.options.app_id, self.options.services, reason))

    def on_RestartsRecorded(self, msg: RestartsRecorded) -> None:
        """Our restart request is durable: the marker has done its job (unless it already asks for a newer one)."""
        if (msg.app_id == self.options.app_id and set(self.options.services) <= set(msg.services)
                and read_config(self.marker).get("reason") == msg.reason):
            self._drop_marker()

    def _drop_marker(self) -> None:
        try:
            os.unlink(self.marker)
        except FileNotFoundError:
            pass
