"""The cloud's configuration: conf/cloud.toml is complete and valid, and bad values are refused by name."""
from __future__ import annotations

import pytest

import conf
from cloud.settings import load_cloud_settings


def test_the_defaults_make_a_loopback_cloud_seeded_with_the_agents_demo_device():
    settings = load_cloud_settings()
    agent = conf.defaults("agent")
    assert (settings.http_host, settings.http_port, settings.mqtt.host) == ("127.0.0.1", 8080, "127.0.0.1")
    assert settings.base_url == agent["cloud"]["url"]
    assert (settings.seed.uuid, settings.seed.thing, settings.seed.token) == \
        (agent["device"]["uuid"], agent["device"]["thing"], agent["device"]["token"])
    assert settings.store.kind == "sqlite"
    assert (settings.limits.max_state_bytes, settings.limits.max_depth, settings.max_queued_per_thing) == (8192, 6, 10)


def test_every_key_of_the_default_file_is_documented():
    lines = (conf.DEFAULTS_DIR / "cloud.toml").read_text().splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[number - 1].startswith("#") or "=" in lines[number - 1], f"undocumented: {line}"


@pytest.mark.parametrize("override, key", [
    ("http.port=0", "http.port"),
    ("mqtt.port=70000", "mqtt.port"),
    ("mqtt.client_id=", "mqtt.client_id"),
    ("mqtt.publish_window=0", "mqtt.publish_window"),
    ("http.client_timeout=0", "http.client_timeout"),
    ("shadow.max_state_bytes=30721", "shadow.max_state_bytes"),
    ("shadow.max_depth=0", "shadow.max_depth"),
    ("shadow.max_queued_per_thing=0", "shadow.max_queued_per_thing"),
    ("store.url=mysql://db/x", "store.url"),
    ("auth.admin_token=short", "auth.admin_token"),
    ("seed.thing=no.dots", "seed.thing"),
    ("seed.token=short", "seed.token"),
    ("log.level=LOUD", "log.level"),
    ("http.nope=1", "http.nope"),
])
def test_bad_values_are_refused_naming_the_key(override, key):
    with pytest.raises(conf.ConfigError, match=key.replace(".", r"\.")):
        load_cloud_settings(None, [override])


def test_the_quota_goes_up_to_thirty_kib_and_the_seed_can_be_left_out():
    settings = load_cloud_settings(None, ["shadow.max_state_bytes=30720", 'seed.uuid=""'])
    assert settings.limits.max_state_bytes == 30720 and settings.seed is None


def test_listening_beyond_loopback_needs_a_secret_admin_token():
    with pytest.raises(conf.ConfigError, match="admin_token"):
        load_cloud_settings(None, ["http.host=0.0.0.0"])
    settings = load_cloud_settings(None, ["http.host=0.0.0.0", "auth.admin_token=a-real-secret-token"])
    assert settings.base_url == "https://127.0.0.1:8080"
    assert load_cloud_settings(None, ["http.host=::1"]).base_url == "https://[::1]:8080"
    plain = ["http.cert_file=", "http.key_file="]
    assert load_cloud_settings(None, ["http.host=::1", *plain]).base_url == "http://[::1]:8080"


def test_off_loopback_the_seed_device_is_not_registered_with_the_public_default_token():
    exposed = load_cloud_settings(None, ["http.host=0.0.0.0", "auth.admin_token=a-real-secret-token"])
    assert exposed.seed is None and "not registered" in exposed.notes[0] and "'demo-device'" in exposed.notes[0]
    own_token = load_cloud_settings(None, ["http.host=0.0.0.0", "auth.admin_token=a-real-secret-token",
                                           "seed.token=a-device-secret"])
    assert own_token.seed is not None and own_token.notes == ()
    assert load_cloud_settings().seed is not None  # loopback: the demo device as the agent's defaults name it


def test_the_cloud_reaches_the_broker_over_tls_and_plaintext_only_on_loopback():
    settings = load_cloud_settings()
    assert (settings.mqtt.port, settings.mqtt.tls, settings.mqtt.cert_file) == (8883, True, "var/pki/cloud.crt")
    with pytest.raises(conf.ConfigError, match=r"^mqtt\.tls: the broker 'broker\.example\.com' is not loopback"):
        load_cloud_settings(None, ["mqtt.host=broker.example.com", "mqtt.tls=false"])
    load_cloud_settings(None, ["mqtt.host=broker.example.com"])


def test_an_api_certificate_makes_the_operator_commands_use_https_and_verify_with_the_ca():
    settings = load_cloud_settings(None, ["http.cert_file=s.crt", "http.key_file=s.key", "http.ca_file=ca.crt"])
    assert settings.base_url == "https://127.0.0.1:8080" and settings.operator_tls().ca_file == "ca.crt"
    with pytest.raises(conf.ConfigError, match=r"^http\.cert_file"):
        load_cloud_settings(None, ["http.cert_file="])
