"""The one settings mechanism: declared dataclasses, value rules, cross-field checks, one error naming the key."""
from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import conf
from actors.persistence import Persistence
from actors.shadow.app_config import AppConfig
from actors.shadow.listener import ShadowListener
from actors.target.poller import Poller
from actors.target.reconciler import Reconciler
from actors.target.reporter import Reporter
from cloud.settings import SECTIONS as CLOUD_SECTIONS
from conf.actors import config_slice
from conf.agent import SECTIONS as AGENT_SECTIONS
from conf.schema import PORT, ConfigError, as_table, fraction, parse, positive, setting


@dataclasses.dataclass(frozen=True)
class Example:
    port: int = setting(80, rule=PORT)
    delay: float = setting(1.0, rule=positive)
    share: float = setting(0.5, rule=fraction)
    names: tuple[str, ...] = ()
    low: float = 1.0
    high: float = 2.0
    keyword: str = setting("x", key="class")

    def check(self) -> None:
        if self.low > self.high:
            raise ConfigError("low must be at most high")


def test_defaults_ints_for_floats_and_arrays_as_tuples():
    assert parse(Example, {}, "ex") == Example()
    parsed = parse(Example, {"delay": 3, "names": ["a", "b"], "class": "y"}, "ex")
    assert parsed.delay == 3.0 and isinstance(parsed.delay, float)
    assert parsed.names == ("a", "b") and parsed.keyword == "y"
    assert as_table(parsed)["names"] == ["a", "b"] and as_table(parsed)["class"] == "y"


@pytest.mark.parametrize("table, message", [
    ({"prot": 1}, "ex.prot: unknown setting (known: port, delay"),
    ({"port": "80"}, "ex.port must be int, got str '80'"),
    ({"port": True}, "ex.port must be int, got bool"),
    ({"delay": True}, "ex.delay must be float, got bool"),
    ({"port": 0}, "ex.port must be in 1..65535, got 0"),
    ({"port": 65536}, "ex.port must be in 1..65535, got 65536"),
    ({"delay": 0}, "ex.delay must be a positive number"),
    ({"delay": math.inf}, "ex.delay must be a positive number"),
    ({"delay": math.nan}, "ex.delay must be a positive number"),
    ({"share": 1.0}, "ex.share must be in [0, 1)"),
    ({"names": "a"}, "ex.names must be a list"),
    ({"names": ["a", 1]}, "ex.names[1] must be str"),
    ({"low": 3.0}, "ex.low must be at most high"),
])
def test_each_problem_is_one_error_naming_the_key(table, message):
    with pytest.raises(ConfigError) as caught:
        parse(Example, table, "ex")
    assert message in str(caught.value)


@given(st.integers())
def test_a_port_is_accepted_exactly_in_range(port):
    if 1 <= port <= 65535:
        assert parse(Example, {"port": port}, "ex").port == port
    else:
        with pytest.raises(ConfigError, match=r"^ex\.port must be in 1\.\.65535"):
            parse(Example, {"port": port}, "ex")


@given(st.one_of(st.floats(allow_nan=True), st.integers(-10**6, 10**6)))
def test_a_positive_setting_is_finite_and_above_zero(value):
    if math.isfinite(value) and value > 0:
        assert parse(Example, {"delay": value}, "ex").delay == float(value)
    else:
        with pytest.raises(ConfigError, match=r"^ex\.delay must be a positive number"):
            parse(Example, {"delay": value}, "ex")


@given(st.one_of(st.none(), st.booleans(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
def test_a_value_of_the_wrong_type_never_passes(value):
    with pytest.raises(ConfigError, match=r"^ex\.port must be int"):
        parse(Example, {"port": value}, "ex")


@given(st.dictionaries(st.sampled_from(["port", "delay", "share", "low", "high"]),
                       st.floats(-1e6, 1e6, allow_nan=False), max_size=5))
def test_whatever_parses_round_trips_through_its_table(table):
    try:
        parsed = parse(Example, table, "ex")
    except ConfigError as exc:
        assert str(exc).startswith("ex.")  # every refusal names a key of the table
        return
    assert parse(Example, as_table(parsed), "ex") == parsed


def test_the_documented_defaults_are_the_declared_defaults():
    for kind, sections in (("agent", AGENT_SECTIONS), ("cloud", CLOUD_SECTIONS)):
        shipped = conf.defaults(kind)
        assert set(shipped) - {"actors"} == set(sections)
        for name, cls in sections.items():
            assert as_table(cls()) == shipped[name], f"{kind}.toml [{name}]"


def test_each_actor_gets_only_what_it_uses_and_the_token_only_if_it_sends_it():
    config = conf.load("agent")
    for cls in (Poller, Reporter, ShadowListener):
        assert config_slice(config, cls.uses)["device"]["token"] == config["device"]["token"]
    for cls in (Persistence, Reconciler, AppConfig):
        sliced = config_slice(config, cls.uses)
        # The policy reserves the broker's port: its address, nothing of the link's credentials.
        assert "token" not in sliced.get("device", {}) and set(sliced.get("mqtt", {})) <= {"host", "port"}
    assert config_slice(config, ("device",))["device"] == {"uuid": "demo-device", "thing": "demo-device",
                                                           "token_file": ""}
    assert config_slice(config, Reconciler.uses) == {
        "device": {"uuid": "demo-device"}, "store": config["store"], "policy": config["policy"],
        "update": config["update"], "agent": {"admin_port": 19500},
        "mqtt": {"host": "127.0.0.1", "port": config["mqtt"]["port"]},
        "cloud": {"url": config["cloud"]["url"]}, "api": {"key_file": "var/api.key", "port": 0}}


@pytest.mark.parametrize("override, message", [
    ("actors.poller.settings.intervall=5", "actors.poller.settings.intervall: unknown setting"),
    ("actors.persistence.settings.x=1", "actors.persistence.settings.x: unknown setting (known: none)"),
    ('actors.poller.subscribes=["NoSuchMessage"]', "actors.poller.subscribes names unknown message types"),
    ('actors.ghost.class="nowhere.Ghost"', "actors.ghost.class: cannot import nowhere"),
    ('actors.ghost.class="actors.persistence.Ghost"', "actors.ghost.class: actors.persistence has no Ghost"),
    ("mqtt.reconnect_min=90", "mqtt.reconnect_min must be positive and at most mqtt.reconnect_max"),
    ('shadow.names=["a", "a"]', "shadow.names must be distinct"),
    ("supervisor.hold_limit=0", "supervisor.hold_limit must be at least 1"),
    ('store.synchronous="OFF"', "store.synchronous must be one of FULL, NORMAL"),
    ('agent.log_level="LOUD"', "agent.log_level must be one of"),
    ("device.uuid=a_b", "device.uuid 'a_b' cannot label containers"),
    ('shadow.handlers=["mypkg.handler"]', "shadow.handlers must be 'package.module:function' paths"),
])
def test_load_checks_the_global_sections_and_every_enabled_actor(override, message):
    with pytest.raises(ConfigError) as caught:
        conf.load("agent", None, [override])
    assert message in str(caught.value)


def test_a_disabled_actor_is_checked_for_shape_only():
    # app_config ships disabled with no keys: a value its settings refuse, harmless until it is enabled
    conf.load("agent")
    with pytest.raises(ConfigError, match="actors.app_config.settings.keys must list"):
        conf.load("agent", None, ["actors.app_config.enabled=true"])


@given(st.lists(st.sampled_from(["device", "mqtt", "cloud", "store", "shadow", "agent", "supervisor",
                                 "device.uuid", "device.thing", "device.token", "mqtt.port"]), max_size=6))
def test_a_slice_holds_what_it_names_and_a_secret_only_when_named(uses):
    config = conf.defaults("agent")
    sliced = config_slice(config, tuple(uses))
    assert set(sliced) == {item.partition(".")[0] for item in uses}
    assert ("token" in sliced.get("device", {})) == ("device.token" in uses)
    for section, table in sliced.items():
        assert all(config[section][key] == value for key, value in table.items())
        if section in uses:
            assert set(table) | {"token"} >= set(config[section]) - {"token"}


@settings(max_examples=40, deadline=None)
@given(st.integers(-2**40, 2**40))
def test_an_override_of_a_port_is_accepted_exactly_in_range(port):
    if 1 <= port <= 65535:
        assert conf.load("agent", None, [f"agent.admin_port={port}"])["agent"]["admin_port"] == port
    else:
        with pytest.raises(ConfigError, match=rf"^agent\.admin_port must be in 1\.\.65535, got {port}$"):
            conf.load("agent", None, [f"agent.admin_port={port}"])
