"""app_config's file, from outside (issue 14, issue 9): values compared as JSON values with their type, strict
JSON written, symlinks and non-regular files refused, reads capped, the file's mode a setting (0640).

The handler runs in the test's process with publish replaced by a list; the file is real."""
from __future__ import annotations

import json
import os
import stat
import threading

import pytest

from actors.shadow.app_config import MAX_FILE_BYTES, AppConfig, AppConfigSettings, ConfigFileRefused, read_config
from conf.schema import ConfigError, parse
from messages.bus.shadow import ShadowDeltaApplied, ShadowDeltaUpdated


@pytest.fixture
def handler(tmp_path):
    def make(**settings):
        actor, published = AppConfig(), []
        actor.publish = published.append
        actor.config = {"device": {"thing": "t"}}
        actor.options = AppConfigSettings(path=str(tmp_path / "app.json"), keys=("a", "b"), **settings)
        actor.marker = actor.options.path + ".restart-pending"
        actor.published = published
        return actor
    return make


def apply(actor, delta, version=1):
    actor.published.clear()
    actor.on_ShadowDeltaUpdated(ShadowDeltaUpdated("t", "", version, delta, delta))
    (answer,) = [msg for msg in actor.published if isinstance(msg, ShadowDeltaApplied)]
    return answer


def content(actor):
    with open(actor.options.path, "rb") as fh:
        return json.loads(fh.read())


@pytest.mark.parametrize("before, after", [(True, 1), (1, True), (1, 1.0), (1.0, 1), (0, False), (None, 0)])
def test_a_change_of_type_alone_is_written_and_reported(handler, before, after):
    actor = handler()
    apply(actor, {"a": before})
    answer = apply(actor, {"a": after}, 2)
    assert type(content(actor)["a"]) is type(after) and type(answer.reported["a"]) is type(after)


def test_the_file_has_the_configured_mode_default_0640_also_when_replaced(handler):
    actor = handler()
    apply(actor, {"a": 1})
    assert stat.S_IMODE(os.stat(actor.options.path).st_mode) == 0o640
    actor = handler(file_mode=0o600)
    apply(actor, {"a": 2})
    assert stat.S_IMODE(os.stat(actor.options.path).st_mode) == 0o600
    assert os.listdir(os.path.dirname(actor.options.path)) == ["app.json"]  # no temp file left


def test_file_mode_is_a_checked_setting():
    where = "actors.app_config.settings"
    assert parse(AppConfigSettings, {"path": "a", "keys": ["a"]}, where).file_mode == 0o640
    assert parse(AppConfigSettings, {"path": "a", "keys": ["a"], "file_mode": 0o600}, where).file_mode == 0o600
    for bad in (0o1777, -1, "0640", True):
        with pytest.raises(ConfigError, match="file_mode"):
            parse(AppConfigSettings, {"path": "a", "keys": ["a"], "file_mode": bad}, where)


def test_only_strict_json_is_ever_written(handler):
    actor = handler()
    apply(actor, {"a": 1})
    answer = apply(actor, {"a": float("inf"), "b": 2}, 2)  # built in memory: no decoder lets 1e999 through
    assert b"Infinity" not in open(actor.options.path, "rb").read()
    assert content(actor) == {"a": 1} and "cannot write" in answer.failures["a"]


def test_a_symlink_at_the_path_is_neither_read_through_nor_replaced(handler, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text('{"a": "secret"}')
    actor = handler()
    os.symlink(secret, actor.options.path)
    answer = apply(actor, {"a": 1})
    assert answer.reported == {} and "symlink" in answer.failures["a"]
    assert os.path.islink(actor.options.path) and secret.read_text() == '{"a": "secret"}'
    with pytest.raises(ConfigFileRefused, match="symlink"):
        read_config(actor.options.path)


def test_a_fifo_at_the_path_is_refused_without_blocking(handler):
    actor = handler()
    os.mkfifo(actor.options.path)
    done = threading.Event()
    threading.Thread(target=lambda: (apply(actor, {"a": 1}), done.set()), daemon=True).start()
    assert done.wait(5), "the handler blocked on a FIFO"
    assert "not a regular file" in actor.published[-1].failures["a"]


def test_what_is_read_back_is_capped(handler):
    actor = handler()
    with open(actor.options.path, "w") as fh:
        fh.write('{"a": "' + "x" * MAX_FILE_BYTES + '"}')
    with pytest.raises(ConfigFileRefused, match="larger than"):
        read_config(actor.options.path)
    answer = apply(actor, {"a": 1})
    assert "larger than" in answer.failures["a"]


def test_a_file_that_is_not_strict_json_reads_as_empty_and_is_rewritten(handler):
    actor = handler()
    with open(actor.options.path, "w") as fh:
        fh.write('{"a": Infinity, "a": 1}')
    assert read_config(actor.options.path) == {}
    apply(actor, {"a": 2})
    assert content(actor) == {"a": 2}
