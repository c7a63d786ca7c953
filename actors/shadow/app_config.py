"""Built-in shadow handler: selected desired keys of one shadow, kept in an application's config file.

Enabled by configuration (``[actors.app_config]``). The file is a JSON object holding the selected
top-level keys, in strict JSON (never Infinity or NaN); it is replaced atomically (temp file with mode
``file_mode``, fsync, rename, fsync of the directory), so a reader or a power cut sees the old file or the
new one, never a mix. What the handler reports is read back from the file: the device's actual state,
which differs from desired when a value is out of its range. Values are compared as JSON values with their
type (true is not 1, 1 is not 1.0), so each such change is written. The handler never follows a symlink at
``path`` and reads only a regular file of at most MAX_FILE_BYTES: anything else is refused, reported as a
failure of every key, and left as it is.

When the delta carries ``requiresRestart: true``, or a value changed while desired holds
``requiresRestart: true``, it publishes RestartServices naming the services that use the file (the
reconciler acts on it). A marker written before the rename makes that restart survive a crash: it is
removed only once persistence says the request is durable (RestartsRecorded), and every start that finds
it publishes the request again (persistence keeps one request per service, so a repeat costs nothing).
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import stat
import tempfile

from actors.runtime.base import FleetletActor
from conf.schema import ConfigError, non_empty, setting
from messages.bus.shadow import ShadowDeltaApplied, ShadowDeltaUpdated
from messages.bus.target import RestartServices, RestartsRecorded
from messages.protocol import json as strict_json

RESTART_MARKER_SUFFIX = ".restart-pending"
MAX_FILE_BYTES = 1024 * 1024  # an application's config file, as read back; the shadow's values are far smaller


class ConfigFileRefused(Exception):
    """The config file's path holds something the handler must not read or replace; the text says what."""


def _file_mode(value: int) -> str | None:
    return None if 0 <= value <= 0o777 else f"must be a permission mode from 0o000 to 0o777, got {value!r}"


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
    file_mode: int = setting(0o640, rule=_file_mode)  # the file's permissions: the owner writes, its group reads

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
                failures[key] = f"{_shown(value)} is not a number; kept {_shown(current.get(key))}"
                continue
            applied = min(max(value, low), high)
            if applied != value:  # a bound: keep an integer an integer
                failures[key] = f"{value:g} is outside {low:g}..{high:g}; applied {applied:g}"
                value = int(applied) if isinstance(value, int) and applied.is_integer() else applied
        content[key] = value
    return content, failures


def changed_keys(current: dict, content: dict, settings: AppConfigSettings) -> list[str]:
    """The keys whose value differs as a JSON value, type included: true -> 1 and 1 -> 1.0 are changes."""
    return sorted(key for key in settings.keys if (key in content) != (key in current)
                  or not strict_json.json_identical(content.get(key), current.get(key)))


def _shown(value: object) -> str:
    return json.dumps(value)[:80]


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
    """The file's object; {} when it is missing or not strict JSON holding an object (it is rewritten whole on
    the next change). ConfigFileRefused for a symlink, a non-regular file or one beyond MAX_FILE_BYTES."""
    try:
        # O_NOFOLLOW: a symlink planted at the path is never read through; O_NONBLOCK: nor does a FIFO block.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigFileRefused(f"{path} is a symlink: refused") from None
        raise ConfigFileRefused(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ConfigFileRefused(f"{path} is not a regular file: refused")
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigFileRefused(f"{path} is larger than {MAX_FILE_BYTES} bytes: refused")
    try:
        content = strict_json.decode(data)
    except strict_json.JSONRefused:
        return {}
    return content if isinstance(content, dict) else {}


def check_replaceable(path: str) -> None:
    """ConfigFileRefused unless ``path`` is missing or a regular file (not a symlink): what may be replaced."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise ConfigFileRefused(f"{path} is a symlink: refused")
    if not stat.S_ISREG(mode):
        raise ConfigFileRefused(f"{path} is not a regular file: refused")


def write_atomically(path: str, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` (mode ``mode``): temp file, fsync, rename, fsync of the directory."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # mkstemp makes it 0600; the umask does not apply to fchmod
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
            try:
                reason = read_config(self.marker).get("reason")
            except ConfigFileRefused:
                reason = None
            self._restart(reason if isinstance(reason, str) else f"{self.options.path} changed")

    def on_ShadowDeltaUpdated(self, msg: ShadowDeltaUpdated) -> None:
        if msg.thing_name != self.config["device"]["thing"] or msg.shadow_name != self.options.shadow:
            # Every handler answers every delta, so the listener knows when the apply is over.
            self.publish(ShadowDeltaApplied(self.name, msg.thing_name, msg.shadow_name, msg.version, {}, {}))
            return
        try:
            current = read_config(self.options.path)
        except ConfigFileRefused as exc:
            self._refused(msg, str(exc))
            return
        content, failures = plan_config(current, msg.delta, msg.desired, self.options)
        changed = changed_keys(current, content, self.options)
        restart = wants_restart(msg.delta, msg.desired, bool(changed), self.options)
        what = f"{self.options.path} changed ({', '.join(changed)})" if changed else "a restart was asked for"
        reason = f"{what} at shadow version {msg.version}"
        try:
            if restart:
                write_atomically(self.marker, strict_json.encode({"reason": reason}), 0o600)
            if changed:
                check_replaceable(self.options.path)
                write_atomically(self.options.path, strict_json.encode(content, indent=2), self.options.file_mode)
        except (OSError, ConfigFileRefused, strict_json.JSONRefused) as exc:
            problem = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
            self.log.error("cannot write %s: %s", self.options.path, problem)
            failures.update({key: f"cannot write {self.options.path}: {problem}" for key in changed})
            restart = False
            self._drop_marker()
        try:
            actual = read_config(self.options.path)
        except ConfigFileRefused as exc:
            self._refused(msg, str(exc))
            return
        self.publish(ShadowDeltaApplied(self.name, msg.thing_name, msg.shadow_name, msg.version,
                                   reported_state(actual, msg.desired, self.options), failures))
        if restart:
            self._restart(reason)

    def _refused(self, msg: ShadowDeltaUpdated, reason: str) -> None:
        """The path holds what the handler must not touch: every key fails, nothing is written or reported."""
        self.log.error("%s", reason)
        failures = {key: reason for key in self.options.keys if key in msg.delta}
        self.publish(ShadowDeltaApplied(self.name, msg.thing_name, msg.shadow_name, msg.version, {}, failures))

    def _restart(self, reason: str) -> None:
        self.publish(RestartServices(self.options.app_id, self.options.services, reason))

    def on_RestartsRecorded(self, msg: RestartsRecorded) -> None:
        """Our restart request is durable: the marker has done its job (unless it already asks for a newer one)."""
        if msg.app_id != self.options.app_id or not set(self.options.services) <= set(msg.services):
            return
        try:
            pending = read_config(self.marker).get("reason")
        except ConfigFileRefused as exc:  # something planted at the marker's path: leave it, say so
            self.log.error("%s", exc)
            return
        if pending == msg.reason:
            self._drop_marker()

    def _drop_marker(self) -> None:
        try:
            os.unlink(self.marker)
        except FileNotFoundError:
            pass
