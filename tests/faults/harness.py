"""The fault rig: a real agent (`run.py agent`, generated configuration), a real Mosquitto, the reference cloud
and a private Docker engine, each owned and ended by pid. Shared by tests/faults (quick mode) and bench.faults
(long mode), so both measure the same thing the same way.

The engine is a private dockerd (tests/support/private_dockerd.py): a
scenario may stop it, and the machine's engine is never touched. The agent reaches it through DOCKER_HOST,
which the engine adapter's `docker.from_env` reads. Between the agent and the cloud sits a front
(tests/faults/garbage.py) that passes requests through, or answers garbage when a scenario asks.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import conf
from actors.target.engine.adapter import LABEL_OWNER, LABEL_SERVICE_NAME
from bench.common import pss_kib
from cloud.loopback import Mosquitto
from tests.faults.garbage import Front
from tests.support.cloud import ADMIN_TOKEN, CloudProcess
from tests.support.pki import session_pki
from tests.support.polling import wait_for
from tests.support.ports import free_admin_port
from tests.support.private_dockerd import PrivateDockerd
from tests.support.processes import alive, descendants, kill_pids

ROOT = pathlib.Path(__file__).resolve().parents[2]
IMAGE = "fleetlet-test/busybox:1"
APP = "1"

# Fast enough for a quick run, the shipped shape otherwise: every shipped actor, app_config enabled.
ACTOR_SETTINGS = {
    "poller": {"interval": 0.5, "jitter": 0.0, "backoff_min": 0.2, "backoff_max": 1.0, "min_gap": 0.05},
    "reconciler": {"drift_interval": 1.0, "retry_base": 0.2, "retry_max": 1.0, "max_attempts": 2,
                   "engine_timeout": 5.0, "stop_timeout": 1},
    "reporter": {"throttle": 0.2, "retry_min": 0.2, "retry_max": 0.5},
}


def describe(pid: int) -> str | None:
    """A live ``pid`` with its state, parent, process group, age and command; None if it is gone or a zombie."""
    try:
        raw = pathlib.Path(f"/proc/{pid}/stat").read_text()
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    comm, fields = raw[raw.index("(") + 1:raw.rindex(")")], raw.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    age = time.monotonic() - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return f"{pid} {comm} state {fields[0]} ppid {fields[1]} pgid {fields[2]} age {age:.1f} s: {cmdline[:60]}"


def pss_kib_of(pid: int, part: str = "Pss") -> int:
    """A process's proportional set size (KiB), or ``part`` of it; 0 once it has ended (an engine worker lives
    shortly)."""
    try:
        return pss_kib(pid, part)
    except OSError:
        return 0


def mentioning(text: str) -> set[int]:
    """Live processes whose command line holds ``text``: actors fork from run.py and keep its command line."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if text.encode() in pathlib.Path(f"/proc/{entry}/cmdline").read_bytes() and alive(int(entry)):
                    found.add(int(entry))
            except OSError:
                continue
    return found


def toml(sections: dict, prefix: str = "") -> str:
    """A TOML document from nested dicts (JSON scalars and arrays are TOML)."""
    lines, tables = [], []
    for key, value in sections.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    out = (f"[{prefix}]\n" if prefix and lines else "") + "".join(line + "\n" for line in lines)
    for key, value in tables:
        out += toml(value, f"{prefix}.{key}" if prefix else key)
    return out


class Rig:
    """One device: its broker, cloud, engine, front, configuration, and the agent runs started for it."""

    def __init__(self, workdir: str | os.PathLike, supervisor: dict | None = None,
                 settings: dict[str, dict] | None = None) -> None:
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.owner = f"f-{uuid.uuid4().hex[:10]}"
        self.token = uuid.uuid4().hex
        self.app_file = self.workdir / "app.json"
        self.db = self.workdir / "agent.db"
        self.agent: subprocess.Popen | None = None
        self.runs: list[subprocess.Popen] = []
        self.pki = session_pki()
        self.broker = Mosquitto(self.workdir, pki_dir=self.pki.dir)  # as deployed: TLS, client certificates, ACL
        self.dockerd = PrivateDockerd()
        self.cloud: CloudProcess | None = None
        self.front: Front | None = None
        self.supervisor = {"restart_base_delay": 0.2, "restart_max_delay": 2.0, **(supervisor or {})}
        self.settings = {name: {**ACTOR_SETTINGS.get(name, {}), **values} for name, values in (settings or {}).items()}
        self.config_path = self.workdir / f"agent-{self.owner}.toml"

    # -- setup and teardown --------------------------------------------------------------------------------
    def __enter__(self) -> "Rig":
        try:
            self.broker.start()
            self.dockerd.start()
            self.dockerd.build_test_images()
            # plain HTTP on loopback (which the agent accepts), so that the front can read each request and answer
            # garbage; MQTT runs over TLS
            self.cloud = CloudProcess(self.workdir, self.broker.port, f"sqlite:///{self.workdir}/cloud.db",
                                      {"log": {"level": "INFO"}}, https=False).start()
            self.front = Front(self.cloud.http_port).start()
            assert self.admin().register_device(self.owner, self.owner, self.token).ok
            self.config_path.write_text(toml(self.agent_config()))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop_agent()
        kill_pids(self.strays())
        if self.front is not None:
            self.front.close()
        if self.cloud is not None:
            self.cloud.stop()
        self.broker.stop()
        self.dockerd.remove()

    def agent_config(self) -> dict:
        shipped = conf.defaults("agent")["actors"]
        actors = {name: {**entry, "settings": self.settings.get(name, ACTOR_SETTINGS.get(name, {}))}
                  for name, entry in shipped.items()}
        actors["app_config"].update(enabled=True, settings={
            "path": str(self.app_file), "keys": ["level", "mode"], "app_id": APP, "services": []})
        cert, key = self.pki.device(self.owner)  # CN = the thing name, which is the uuid: the ACL's %u
        identity = {"ca_file": self.pki.ca, "cert_file": cert, "key_file": key}
        return {
            "device": {"uuid": self.owner, "thing": self.owner, "token": self.token},
            "mqtt": {"port": self.broker.port, "reconnect_min": 0.05, "reconnect_max": 0.5, "keepalive": 5,
                     **identity},
            "cloud": {"url": self.front.url, "timeout": 2.0, **identity},
            "shadow": {"report_timeout": 1.5, "read_timeout": 1.5, "apply_timeout": 3.0},
            "store": {"path": str(self.db)},
            "agent": {"admin_port": free_admin_port(), "stop_timeout": 5.0},
            "supervisor": self.supervisor,
            "actors": actors,
        }

    def effective(self, section: str) -> dict:
        """A section of the configuration the agent runs with: the file over the shipped defaults."""
        return conf.load("agent", str(self.config_path), [])[section]

    def admin(self):
        return self.cloud.client(ADMIN_TOKEN)

    # -- the agent -----------------------------------------------------------------------------------------
    def start_agent(self) -> subprocess.Popen:
        env = {**os.environ, "DOCKER_HOST": self.dockerd.url}
        with (self.workdir / "agent.log").open("ab") as log:
            self.agent = subprocess.Popen([sys.executable, "run.py", "agent", "--config", str(self.config_path)],
                                          cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.runs.append(self.agent)
        return self.agent

    def status(self) -> dict | None:
        result = subprocess.run([sys.executable, "run.py", "status", "--json", "--config", str(self.config_path)],
                                cwd=ROOT, capture_output=True, text=True, timeout=30)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def actors_up(self) -> dict | None:
        """name -> actor (pid, restarts, state...) once every actor of the current run runs; None otherwise."""
        if self.agent is not None and self.agent.poll() is not None:
            raise AssertionError(f"the agent exited with {self.agent.returncode}: {self.log()[-2000:]}")
        doc = self.status()
        if not doc or doc["state"] != "running" or not all(a["state"] == "running" and a["pid"] for a in doc["actors"]):
            return None
        # the answer must come from this run: a killed run's orphaned admin answers on the same port
        return {a["name"]: a for a in doc["actors"]} if {a["pid"] for a in doc["actors"]} <= self.agent_pids() else None

    def wait_up(self, timeout: float = 30.0) -> dict:
        return wait_for(self.actors_up, timeout=timeout, interval=0.2, what="every actor running")

    def agent_pids(self) -> set[int]:
        """The current run's processes: run.py and everything below it (actors, admin, engine workers)."""
        if self.agent is None or self.agent.poll() is not None:
            return set()
        return {self.agent.pid} | descendants(self.agent.pid)

    def strays(self) -> set[int]:
        """Processes of this device's agent that are not the current run's: what a killed run left behind."""
        return mentioning(str(self.config_path)) - self.agent_pids() - {os.getpid()}

    def pss_kib(self, part: str = "Pss") -> int:
        return sum(pss_kib_of(pid, part) for pid in self.agent_pids())

    def kill_agent(self, whole: bool) -> set[int]:
        """SIGKILL run.py alone (its actors are orphaned), or every process of the run at once (a power cut).
        Returns the pids of the killed run."""
        pids = self.agent_pids()
        kill_pids([self.agent.pid] + (sorted(pids - {self.agent.pid}) if whole else []))
        self.agent.wait()
        return pids

    def kill_pid(self, pid: int) -> None:
        kill_pids([pid])

    def kill_strays(self) -> None:
        kill_pids(self.strays())

    def stop_agent(self) -> int | None:
        if self.agent is None:
            return None
        if self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(30)
            except subprocess.TimeoutExpired:
                kill_pids(self.agent_pids())
                self.agent.wait()
        return self.agent.returncode

    def log(self) -> str:
        path = self.workdir / "agent.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- the device's state --------------------------------------------------------------------------------
    def post_target(self, services: dict[str, dict], app_name: str = "app") -> str:
        document = {"apps": {APP: {"appName": app_name, "services": [
            {"serviceName": name, "config": {"image": IMAGE, **config}} for name, config in services.items()]}}}
        reply = self.admin().set_target(self.owner, document)
        assert reply.ok, reply.body
        return reply.json()["etag"]

    def containers(self) -> dict[str, list[dict]]:
        """service -> its containers' id, status, environment and start time, fresh from the engine."""
        found: dict[str, list[dict]] = {}
        client = self.dockerd.client()
        for container in client.containers.list(all=True, filters={"label": f"{LABEL_OWNER}={self.owner}"},
                                                ignore_removed=True):
            state = container.attrs["State"]
            found.setdefault(container.labels[LABEL_SERVICE_NAME], []).append({
                "id": container.id, "status": container.status, "env": container.attrs["Config"]["Env"] or [],
                "started": state.get("StartedAt"), "restarts": container.attrs.get("RestartCount", 0)})
        return found

    def converged_on(self, services: dict[str, dict]) -> bool:
        """One running container per service of ``services``, with its environment, and nothing else."""
        found = self.containers()
        if set(found) != set(services):
            return False
        for name, config in services.items():
            wanted = {f"{k}={v}" for k, v in config.get("environment", {}).items()}
            containers = found[name]
            if len(containers) != 1 or containers[0]["status"] != "running" or not wanted <= set(containers[0]["env"]):
                return False
        return True

    def reported_etag(self) -> str | None:
        reply = self.admin().device_state(self.owner)
        return reply.json()["state"].get("target_state", {}).get("etag") if reply.ok else None

    def shadow(self) -> dict:
        reply = self.admin().get_shadow(self.owner)
        return reply.json() if reply.ok else {}

    def desire(self, desired: dict) -> int:
        reply = self.admin().update_shadow(self.owner, {"state": {"desired": desired}})
        assert reply.status == 200, reply.body
        return reply.json()["version"]

    def reported(self) -> dict:
        return self.shadow().get("state", {}).get("reported", {})

    def integrity(self) -> str:
        connection = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return connection.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            connection.close()
