"""`depends_on` with `condition: service_healthy` on the real engine, in a running agent (persistence +
reconciler): the dependent is not created while its dependency's health check has not passed, and is
created and started once it has.

The dependency turns healthy when the test creates a file in it; `start_period` keeps its failing checks
from counting meanwhile (so it stays "starting", never "unhealthy", and the release is not rolled back).
"""
from __future__ import annotations

import calendar
import time

from tests.integration.test_reconciler_engine import document, engine_agent, set_target  # noqa: F401  (fixture)
from tests.support.polling import wait_for

RUN = "trap 'exit 0' TERM; sleep 86400 & wait"
DB = {"command": ["/bin/sh", "-c", f"mkdir -p /tmp; {RUN}"],  # the image has no /tmp
      "healthcheck": {"test": ["CMD", "/bin/sh", "-c", "test -f /tmp/ok"], "interval": "1s", "retries": 1,
                      "start_period": "120s"}}
WEB = {"command": ["/bin/sh", "-c", RUN], "depends_on": {"db": {"condition": "service_healthy"}}}


def health(container) -> str:
    container.reload()
    return (container.attrs["State"].get("Health") or {}).get("Status", "")


def test_a_service_healthy_dependent_starts_only_once_its_dependency_is_healthy(engine_agent):  # noqa: F811
    start, device = engine_agent
    system = start(release_tick=0.2)  # a release underway re-reads the engine every tick
    set_target(system, document({"1": {"db": DB, "web": WEB}}), '"v1"')
    (db,) = wait_for(lambda: (found := device.containers().get("db")) and found[0].status == "running" and found,
                     what="db running")
    assert health(db) == "starting"

    # Several passes of the reconciler see db running but not healthy: web gets no container in any of them.
    for _ in range(5):
        seen = len(device.messages("ReconcilePassFinished"))
        wait_for(lambda seen=seen: len(device.messages("ReconcilePassFinished")) > seen, what="another pass")
        assert "web" not in device.containers()
        assert health(db) == "starting", "db must still be unready for this check to mean anything"

    healthy_from = time.time()
    assert db.exec_run(["/bin/sh", "-c", "touch /tmp/ok"]).exit_code == 0
    (web,) = wait_for(lambda: (found := device.containers().get("web")) and found[0].status == "running" and found,
                      timeout=20.0, what="web running once db is healthy")
    assert health(db) == "healthy"
    created = calendar.timegm(time.strptime(web.attrs["Created"][:19], "%Y-%m-%dT%H:%M:%S"))  # UTC, whole seconds
    assert created >= int(healthy_from)
    device.wait_converged('"v1"')
