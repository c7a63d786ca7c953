"""Configuration: defaults are the schema; unknown keys and wrong types are refused by name."""
from __future__ import annotations

import pytest

import conf


def test_defaults_have_the_keys_operators_rely_on():
    config = conf.load("agent")
    for section, key in [("device", "uuid"), ("device", "thing"), ("device", "token"), ("mqtt", "host"),
                         ("mqtt", "port"), ("cloud", "url"), ("store", "path")]:
        assert key in config[section]


def test_file_then_overrides(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text('[device]\nthing = "pump-7"\n[mqtt]\nport = 1999\n')
    config = conf.load("agent", str(path), ["mqtt.port=2001", "device.uuid=u-1", "cloud.timeout=3"])
    assert config["device"]["thing"] == "pump-7"
    assert config["mqtt"]["port"] == 2001
    assert config["device"]["uuid"] == "u-1"
    assert config["cloud"]["timeout"] == 3.0 and isinstance(config["cloud"]["timeout"], float)
    assert config["mqtt"]["host"] == "127.0.0.1"  # untouched default


@pytest.mark.parametrize("override, message", [
    ("mqtt.prot=5", "unknown configuration key 'mqtt.prot'"),
    ("nosuch.key=1", "unknown configuration key 'nosuch'"),
    ("mqtt.port=high", "mqtt.port must be int, got str"),
    ("mqtt.port=true", "mqtt.port must be int, got bool"),
    ("mqtt=1", "must look like section.key=value"),
    ("mqtt.port", "must look like section.key=value"),
    ("actors.extra.subscribes=[1]", "actors.extra needs 'class'"),
    ("actors.persistence.colour=1", "unknown configuration key 'actors.persistence.colour'"),
    ("actors.persistence.on_limit=\"never\"", "on_limit must be"),
])
def test_bad_overrides_are_refused_with_the_key(override, message):
    with pytest.raises(conf.ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        conf.load("agent", None, [override])


def test_a_new_actor_type_is_one_configuration_entry():
    # The class must exist: it is imported at load, so that its settings and subscriptions are checked.
    config = conf.load("agent", None, ['actors.metrics.class="tests.support.probe_actors.Idle"',
                                       'actors.metrics.subscribes=["Ping"]'])
    assert config["actors"]["metrics"] == {"class": "tests.support.probe_actors.Idle", "subscribes": ["Ping"]}


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(conf.ConfigError, match="cannot read"):
        conf.load("agent", str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[device\n")
    with pytest.raises(conf.ConfigError, match="not valid TOML"):
        conf.load("agent", str(bad))


def test_one_actor_setting_overridden_keeps_the_others(tmp_path):
    shipped = conf.defaults("agent")["actors"]["reconciler"]["settings"]
    config = conf.load("agent", None, ["actors.reconciler.settings.max_parallel=8"])
    assert config["actors"]["reconciler"]["settings"] == {**shipped, "max_parallel": 8}
    path = tmp_path / "agent.toml"
    path.write_text('[actors.app_config]\nenabled = true\nsettings = { keys = ["mode"] }\n')
    settings = conf.load("agent", str(path))["actors"]["app_config"]["settings"]
    assert settings["keys"] == ["mode"] and settings["path"] == "var/app-config.json"
