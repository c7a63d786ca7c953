"""`run.py target set UUID FILE` with a docker-compose file, against a running cloud: the cloud stores the
converted target state; a compose file the agent could not apply is refused before anything is sent."""
from __future__ import annotations

import json
import pathlib

import pytest

from tests.e2e.test_cloud_cli import operate, running  # noqa: F401  (fixture)
from tests.support.cloud import DEMO

pytestmark = pytest.mark.broker
CORPUS = pathlib.Path(__file__).parent.parent / "compose"


def test_target_set_takes_a_compose_file(running, tmp_path):  # noqa: F811
    status, out, err = operate(running, "target", "set", DEMO["uuid"], str(CORPUS / "zigbee2mqtt.yml"))
    assert status == 0 and json.loads(out)["changed"] is True, err
    status, out, _ = operate(running, "target", "get", DEMO["uuid"])
    services = {s["serviceName"]: s["config"] for s in json.loads(out)["apps"]["zigbee"]["services"]}
    assert services["zigbee2mqtt"]["devices"] == ["/dev/zero:/dev/ttyACM0:rw"]
    assert services["zigbee2mqtt"]["depends_on"] == ["mqtt"] and services["mqtt"]["restart"] == "unless-stopped"

    status, out, _ = operate(running, "target", "set", DEMO["uuid"], "-",
                             stdin=b"services:\n  web:\n    image: busybox\n    build: .\n")
    assert status == 2 and out == ""
    status, out, _ = operate(running, "target", "get", DEMO["uuid"])
    assert "zigbee" in json.loads(out)["apps"]  # nothing was sent
