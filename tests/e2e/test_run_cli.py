"""run.py as operators use it: a real agent process, its status, SIGTERM, and a SIGKILL and restart."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import conf
from fleetlet_version import __version__
from tests.support.polling import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def without_default_actors() -> str:
    """Configuration lines that switch off every actor of the shipped defaults."""
    return "".join(f'[actors.{name}]\nclass = "{entry["class"]}"\nenabled = false\n'
                   for name, entry in conf.defaults("agent")["actors"].items())


def with_api(actors: str) -> str:
    """The lines of ``without_default_actors`` with the local API back on (status goes through it)."""
    return actors.replace('Api"\nenabled = false', 'Api"\nenabled = true')


@pytest.fixture
def agent_conf(tmp_path, port):
    return write_agent_conf(tmp_path, port)


def write_agent_conf(tmp_path, port) -> str:
    """An agent of two probe actors and the local API, its store and socket in ``tmp_path``."""
    path = tmp_path / "agent.toml"
    path.write_text(f"""
[store]
path = "{tmp_path}/agent.db"
[agent]
admin_port = {port}
stop_timeout = 5.0
[api]
socket = "{tmp_path}/api.sock"
key_file = "{tmp_path}/api.key"
{with_api(without_default_actors())}
[actors.recorder]
class = "tests.support.probe_actors.Recorder"
subscribes = ["Probe"]
settings = {{ path = "{tmp_path}/recorded.jsonl" }}
[actors.bystander]
class = "tests.support.probe_actors.Idle"
""")
    return str(path)


def run_py(*args, timeout=30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def start_agent(conf_path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "run.py", "agent", "--config", conf_path], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def status(conf_path) -> dict | None:
    result = run_py("status", "--json", "--config", conf_path)
    return json.loads(result.stdout) if result.returncode == 0 else None


def actors_up(conf_path) -> dict | None:
    doc = status(conf_path)
    if doc and all(a["state"] == "running" for a in doc["actors"]):
        return {a["name"]: a for a in doc["actors"]}
    return None


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_agent(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_status_json_reflects_restarts_and_sigterm_leaves_nothing(agent_conf):
    agent = start_agent(agent_conf)
    try:
        actors = wait_for(lambda: actors_up(agent_conf), timeout=20, interval=0.3, what="agent up")
        assert set(actors) == {"recorder", "bystander", "api"}
        assert all(isinstance(a["pid"], int) and a["restarts"] == 0 for a in actors.values())
        assert status(agent_conf)["errors"] == []
        assert status(agent_conf)["version"] == __version__
        assert run_py("status", "--config", agent_conf).stdout.startswith(f"agent {__version__}: running\n")
        os.kill(actors["recorder"]["pid"], signal.SIGKILL)
        after = wait_for(lambda: (a := actors_up(agent_conf)) and a["recorder"]["restarts"] == 1 and a,
                         timeout=10, interval=0.3, what="restart visible in status")
        assert after["recorder"]["pid"] != actors["recorder"]["pid"]
        assert after["bystander"]["pid"] == actors["bystander"]["pid"]
        pids = [a["pid"] for a in after.values()]
    finally:
        code = stop_agent(agent)
    assert code == 0, agent.stderr.read()
    assert not any(alive(pid) for pid in pids)
    assert status(agent_conf) is None


def test_status_answers_from_the_supervisor_while_the_api_actor_is_down(agent_conf):
    agent = start_agent(agent_conf)
    api = None
    try:
        actors = wait_for(lambda: actors_up(agent_conf), timeout=20, interval=0.3, what="agent up")
        api = actors["api"]["pid"]
        os.kill(api, signal.SIGSTOP)  # alive to its supervisor, deaf to its socket: the API cannot answer
        doc = status(agent_conf)
        assert doc is not None and doc["state"] == "running"
        assert {a["name"]: a["pid"] for a in doc["actors"]} == {name: a["pid"] for name, a in actors.items()}
    finally:
        if api is not None:
            os.kill(api, signal.SIGCONT)
        code = stop_agent(agent)
    assert code == 0, agent.stderr.read()


def test_a_second_run_after_sigkill_ends_the_first_runs_actors(agent_conf):
    first = start_agent(agent_conf)
    actors = wait_for(lambda: actors_up(agent_conf), timeout=20, interval=0.3, what="first agent up")
    first.kill()
    first.wait()
    assert all(alive(a["pid"]) for a in actors.values())  # orphans, as the notes warned
    second = start_agent(agent_conf)
    try:
        old_pids = {a["pid"] for a in actors.values()}
        wait_for(lambda: (a := actors_up(agent_conf)) and old_pids.isdisjoint(x["pid"] for x in a.values()),
                 timeout=20, interval=0.3, what="the second agent's actors")
        assert not any(alive(pid) for pid in old_pids)
    finally:
        code = stop_agent(second)
        assert code == 0, second.stderr.read()[-3000:]


def test_sigkills_while_the_agent_starts_leave_nothing_behind_and_the_next_start_succeeds(agent_conf):
    """SIGKILL at points spread over the start (before, while and after the admin forks): every process a killed
    run forked is gone once the next start is up, and that start succeeds."""
    killed_runs: set[int] = set()
    for forked in (1, 1, 1, 2, 2, 3, 4, 5):
        agent = start_agent(agent_conf)
        # Kill the moment the start has forked `forked` processes (the admin first, then logger, supervisor...):
        # forked actors inherit run.py's command line.
        wait_for(lambda agent=agent, forked=forked: agent.poll() is not None
                 or len(set(processes_mentioning(agent_conf)) - {agent.pid}) >= forked,
                 timeout=30, interval=0.005, what=f"the start to fork {forked} processes")
        agent.kill()
        agent.wait()
        killed_runs |= set(processes_mentioning(agent_conf))
    final = start_agent(agent_conf)
    try:
        wait_for(lambda: actors_up(agent_conf), timeout=30, interval=0.3, what="the final start up")
        survivors = sorted(pid for pid in killed_runs if alive(pid))
        assert survivors == [], f"processes of killed runs survived the next start: {survivors}"
        assert final.poll() is None
    finally:
        code = stop_agent(final)
    assert code == 0, final.stderr.read()[-3000:]
    assert [pid for pid in processes_mentioning(agent_conf) if alive(pid)] == []


def test_bad_configuration_is_refused_with_the_key(tmp_path):
    result = run_py("status", "--set", "mqtt.port=abc")
    assert result.returncode == 2 and "mqtt.port must be int" in result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text(f'[store]\npath = "{tmp_path}/a.db"\n[actors.ghost]\nclass = "nowhere.Ghost"\n'
                      + without_default_actors())
    result = subprocess.run([sys.executable, "run.py", "agent", "--config", str(broken), "--set",
                             "agent.admin_port=%d" % _free()], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "actors.ghost.class: cannot import nowhere" in result.stderr


def _free():
    from tests.support.ports import free_admin_port
    return free_admin_port()


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def test_a_dead_root_supervisor_restarts_the_whole_tree(agent_conf):
    agent = start_agent(agent_conf)
    try:
        actors = wait_for(lambda: actors_up(agent_conf), timeout=20, interval=0.3, what="agent up")
        supervisor = parent_of(actors["recorder"]["pid"])
        assert parent_of(actors["bystander"]["pid"]) == supervisor
        os.kill(supervisor, signal.SIGKILL)
        old = {a["pid"] for a in actors.values()}
        fresh = wait_for(lambda: (a := actors_up(agent_conf)) and old.isdisjoint(x["pid"] for x in a.values()) and a,
                         timeout=30, interval=0.5, what="a new actor tree")
        assert set(fresh) == {"recorder", "bystander", "api"}
        assert not any(alive(pid) for pid in old)
        assert agent.poll() is None
    finally:
        assert stop_agent(agent) == 0


# -- configuration checked before anything starts -------------------------------------------------------------

AGENT_COMMANDS = [("agent",), ("demo",), ("status",), ("status", "--json"), ("plan",), ("poll-now",),
                  ("shadow", "watch", "demo-device")]
CLOUD_COMMANDS = [("cloud",), ("shadow", "get", "demo-device"), ("target", "get", "demo-device")]


def processes_mentioning(text: str) -> list[int]:
    """Processes whose command line holds ``text``: forked actors inherit run.py's, config path included."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if text.encode() in fh.read():
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


def refused(tmp_path, args, config_text: str | bytes | None = None, kind: str = "agent"):
    """Run ``run.py ARGS --config FILE`` on a file of its own; return (exit code, stderr, seconds)."""
    path = tmp_path / f"{kind}-{len(list(tmp_path.iterdir()))}.toml"
    if config_text is None:
        config_text = f'[store]\npath = "{tmp_path}/agent.db"\n' if kind == "agent" else ""
    path.write_bytes(config_text if isinstance(config_text, bytes) else config_text.encode())
    started = time.monotonic()
    result = subprocess.run([sys.executable, "run.py", *args, "--config", str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert processes_mentioning(str(path)) == []  # no actor (nor anything else) was started
    assert not (tmp_path / "agent.db").exists()  # the agent's store is opened before any actor starts
    return result.returncode, result.stderr, elapsed


@pytest.mark.parametrize("command", AGENT_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("override, key", [
    ("actors.poller.settings.intervall=5", "actors.poller.settings.intervall: unknown setting"),
    ("actors.reconciler.settings.cooldown=60", "actors.reconciler.settings.cooldown: unknown setting"),
    ('actors.poller.settings.interval="5"', "actors.poller.settings.interval must be float, got str"),
    ("agent.admin_port=99999", "agent.admin_port must be in 1..65535, got 99999"),
    ("mqtt.port=-1", "mqtt.port must be in 1..65535, got -1"),
])
def test_a_bad_agent_setting_stops_every_command_before_anything_starts(tmp_path, command, override, key):
    code, stderr, elapsed = refused(tmp_path, [*command, "--set", override])
    assert code == 2 and stderr.startswith("configuration error: ") and len(stderr.strip().splitlines()) == 1
    assert key in stderr
    assert elapsed < 5  # the interpreter and the actor modules' imports (about 0.5 s); nothing waits


@pytest.mark.parametrize(("override", "message"), [
    ("mqtt.host=broker.example.com", "mqtt.tls: the broker 'broker.example.com' is not loopback"),
    ("cloud.url=http://cloud.example.com", "cloud.url: 'http://cloud.example.com' is not loopback"),
])
def test_plaintext_off_loopback_stops_the_agent_before_anything_starts(tmp_path, override, message):
    code, stderr, _ = refused(tmp_path, ["agent", "--set", "mqtt.tls=false", "--set", override])
    assert code == 2 and stderr.startswith(f"configuration error: {message}")


def test_an_unreadable_certificate_stops_the_agent_naming_the_key(tmp_path, pki):
    code, stderr, _ = refused(tmp_path, ["agent", "--set", f"mqtt.ca_file={pki.ca}",
                                         "--set", f"mqtt.cert_file={tmp_path}/none.crt"])
    assert (code, stderr) == (2, f"configuration error: mqtt.cert_file: cannot read {tmp_path}/none.crt: "
                                 "no such file\n")


@pytest.mark.parametrize("command", AGENT_COMMANDS[:3], ids=" ".join)
@pytest.mark.parametrize("content, message", [
    (b'[device]\nthing = "caf\xe9"\n', "not UTF-8"),
    (b"[device\n", "not valid TOML"),
    (b"[mqtt]\nport = 99999\n", "mqtt.port must be in 1..65535"),
])
def test_a_broken_agent_file_stops_every_command_before_anything_starts(tmp_path, command, content, message):
    code, stderr, _ = refused(tmp_path, list(command), content)
    assert code == 2 and stderr.startswith("configuration error: ") and len(stderr.strip().splitlines()) == 1
    assert message in stderr


@pytest.mark.parametrize("command", CLOUD_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("content, message", [
    (b"[http]\nport = 99999\n", "http.port must be in 1..65535"),
    (b"[mqtt]\nport = -1\n", "mqtt.port must be in 1..65535"),
    (b"[http]\nprot = 1\n", "unknown configuration key 'http.prot'"),
    (b'[seed]\nthing = "\xff"\n', "not UTF-8"),
    (b"[http\n", "not valid TOML"),
])
def test_a_broken_cloud_file_stops_every_cloud_command(tmp_path, command, content, message):
    code, stderr, _ = refused(tmp_path, list(command), content, kind="cloud")
    assert code == 2 and stderr.startswith("configuration error: ") and len(stderr.strip().splitlines()) == 1
    assert message in stderr
