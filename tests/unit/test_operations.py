"""Operations, the pure parts: JSON log lines, sd_notify datagrams, the service unit and the device's config."""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile

import pytest

import conf
from actors.cli.service import DEVICE_SETTINGS, device_config, unit_text
from actors.runtime.logformat import JsonFormatter, context, formatter_config
from actors.runtime.notify import notify


def record(message: str, *args, **extra) -> logging.LogRecord:
    made = logging.LogRecord("fleetlet.reconciler", logging.WARNING, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_a_json_log_line_is_one_object_with_the_pass_and_the_etag():
    line = JsonFormatter().format(record("pass %d: create %s", 3, "1/web", **context(3, '"v1"')))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc.keys() == {"time", "level", "actor", "event", "pass", "etag"}
    assert (doc["level"], doc["actor"], doc["event"], doc["pass"], doc["etag"]) == (
        "WARNING", "reconciler", "pass 3: create 1/web", 3, '"v1"')
    assert doc["time"].endswith("Z") and "T" in doc["time"]
    assert json.loads(JsonFormatter().format(record("a\nmultiline \"event\"")))["event"] == 'a\nmultiline "event"'
    assert "pass" not in json.loads(JsonFormatter().format(record("no pass", **context())))


def test_a_traceback_stays_inside_its_line():
    try:
        raise ValueError("boom")
    except ValueError:
        made = logging.LogRecord("fleetlet.api", logging.ERROR, __file__, 1, "crashed", (), sys.exc_info())
    line = JsonFormatter().format(made)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exception"]
    assert formatter_config("text") == {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}


def test_sd_notify_sends_a_datagram_to_the_notify_socket():
    path = tempfile.mktemp(prefix="fl-notify-", dir="/tmp")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        try:
            assert notify("READY=1\nSTATUS=x", {"NOTIFY_SOCKET": path})
            assert sock.recv(100) == b"READY=1\nSTATUS=x"
        finally:
            os.unlink(path)
    assert not notify("READY=1", {})  # not under systemd
    assert not notify("READY=1", {"NOTIFY_SOCKET": "relative"})
    assert not notify("READY=1", {"NOTIFY_SOCKET": "/nonexistent/socket"})


def test_sd_notify_reaches_an_abstract_socket():
    name = f"fleetlet-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"WATCHDOG=1"


def test_the_unit_runs_this_checkout_with_the_device_configuration():
    unit = unit_text("/usr/bin/python3", "/opt/fleetlet/run.py")
    assert "ExecStart=/usr/bin/python3 /opt/fleetlet/run.py agent --config /etc/fleetlet/agent.toml" in unit
    assert unit.startswith("[Unit]\n") and "\n[Service]\nType=notify\n" in unit and unit.endswith(
        "[Install]\nWantedBy=multi-user.target\n")


def test_the_device_configuration_changes_only_the_paths():
    shipped = open(os.path.join(os.path.dirname(__file__), "..", "..", "conf", "agent.toml")).read()
    device = device_config(shipped)
    changed = [(a, b) for a, b in zip(shipped.splitlines(), device.splitlines(), strict=True) if a != b]
    assert len(changed) == len(DEVICE_SETTINGS) and len(shipped.splitlines()) == len(device.splitlines())
    assert all(b.split(" = ")[1].strip('"').startswith(("/var/lib/fleetlet/", "/run/fleetlet/", "/etc/fleetlet/"))
               for _, b in changed)


@pytest.mark.parametrize("override, message", [
    ("api.group=no-such-group-here", "api.group: no group 'no-such-group-here' on this device"),
    ("api.port=65536", "api.port"),
    (f"api.socket=/tmp/{'x' * 120}", "api.socket: '/tmp/xxx"),
    ("agent.log_format=xml", "agent.log_format"),
])
def test_what_the_api_and_log_settings_refuse(override, message):
    with pytest.raises(conf.ConfigError) as refused:
        conf.load("agent", None, [override])
    assert str(refused.value).startswith(message)
