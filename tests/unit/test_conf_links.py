"""The links' configuration: plaintext only on loopback, secrets only from files their owner alone can read, and
certificate files checked before the agent starts."""
from __future__ import annotations

import os

import pytest

import conf
from conf.agent import check_link_files
from messages.transport.mqtt import LinkSettings


@pytest.mark.parametrize(("overrides", "key"), [
    (["mqtt.host=broker.example.com", "mqtt.tls=false"], "mqtt.tls"),
    (["mqtt.host=10.0.0.7", "mqtt.tls=false"], "mqtt.tls"),
    (["cloud.url=http://cloud.example.com:8080"], "cloud.url"),
    (["cloud.url=http://192.0.2.1"], "cloud.url"),
    (["mqtt.cert_file="], "mqtt.cert_file"),  # a certificate without its key
    (["cloud.key_file="], "cloud.cert_file"),
    (["mqtt.password_file=/p"], "mqtt.password_file"),  # a password without a username
])
def test_what_would_travel_unprotected_or_half_configured_is_refused_naming_the_key(overrides, key):
    with pytest.raises(conf.ConfigError, match=f"^{key.replace('.', r'[.]')}"):
        conf.load("agent", None, overrides)


@pytest.mark.parametrize("overrides", [
    ["mqtt.host=127.0.0.1", "mqtt.tls=false"], ["mqtt.host=::1", "mqtt.tls=false"],
    ["mqtt.host=localhost", "mqtt.tls=false"], ["mqtt.host=broker.example.com"],
    ["cloud.url=http://127.0.0.1:8080"], ["cloud.url=http://[::1]:8080"], ["cloud.url=https://cloud.example.com"],
])
def test_plaintext_on_loopback_and_tls_anywhere_are_accepted(overrides):
    conf.load("agent", None, overrides)


def test_the_defaults_are_tls_with_the_demo_devices_certificate():
    mqtt = conf.load("agent")["mqtt"]
    assert (mqtt["port"], mqtt["tls"], mqtt["cert_file"]) == (8883, True, "var/pki/demo-device.crt")
    settings = LinkSettings.from_config(conf.load("agent"), "demo-device", max_packet_size=4096)
    assert settings.tls is not None and settings.tls.ca_file == "var/pki/ca.crt" and settings.max_packet_size == 4096


def secret(tmp_path, text: str, mode: int) -> str:
    path = tmp_path / "secret"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def test_the_token_file_replaces_the_token_when_only_its_owner_may_read_it(tmp_path):
    path = secret(tmp_path, "tok-123456\n", 0o600)
    config = conf.load("agent", None, [f"device.token_file={path}"])
    assert config["device"]["token"] == "tok-123456"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_token_file_others_may_read_is_refused(tmp_path, mode):
    with pytest.raises(conf.ConfigError, match=rf"^device\.token_file: .* readable by group or others .*{mode:04o}"):
        conf.load("agent", None, [f"device.token_file={secret(tmp_path, 'tok-123456', mode)}"])


def test_missing_and_empty_secret_files_are_refused_naming_the_key(tmp_path):
    with pytest.raises(conf.ConfigError, match=r"^device\.token_file: cannot read .*/nope"):
        conf.load("agent", None, [f"device.token_file={tmp_path}/nope"])
    with pytest.raises(conf.ConfigError, match=r"^mqtt\.password_file: .* is empty"):
        conf.load("agent", None, ["mqtt.username=dev", f"mqtt.password_file={secret(tmp_path, '', 0o600)}"])


def test_the_mqtt_password_reaches_only_the_link(tmp_path):
    config = conf.load("agent", None, ["mqtt.username=dev", f"mqtt.password_file={secret(tmp_path, 'pw', 0o600)}"])
    assert "pw" not in repr(config["mqtt"])
    settings = LinkSettings.from_config(config, "dev")
    assert (settings.username, settings.password) == ("dev", "pw") and "pw" not in repr(settings)


def test_certificate_files_are_checked_before_the_agent_starts_naming_the_key(tmp_path):
    config = conf.load("agent", None, [f"mqtt.ca_file={tmp_path}/ca.crt"])
    with pytest.raises(conf.ConfigError, match=rf"^mqtt\.ca_file: cannot read {tmp_path}/ca.crt: no such file"):
        check_link_files(config)
    plaintext = conf.load("agent", None, ["mqtt.tls=false", f"cloud.ca_file={tmp_path}/cloud-ca.crt"])
    with pytest.raises(conf.ConfigError, match=rf"^cloud\.ca_file: cannot read {tmp_path}/cloud-ca.crt"):
        check_link_files(plaintext)
    # nothing to read: plaintext on loopback, and a cloud over http opens no certificate either
    check_link_files(conf.load("agent", None, ["mqtt.tls=false", "cloud.url=http://127.0.0.1:8080"]))
