"""docker-compose files as target states: compose's semantics for what is supported, every other key refused by
its path, YAML read as compose reads it (1.2 scalars, no duplicate keys, bounded)."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from cloud.compose import ComposeError, load_compose, looks_like_compose
from cloud.compose_yaml import MAX_ALIASES, MAX_FILE_BYTES, MAX_NODES, load_compose_yaml
from messages.protocol.target_state import Healthcheck, parse_target_state

ROOT = pathlib.Path(__file__).parent.parent.parent


def convert(text: str, environ: dict | None = None, **kwargs) -> dict:
    return load_compose(text.encode(), environ or {}, **kwargs)


def config_of(text: str, environ: dict | None = None, service: str = "web") -> dict:
    (app,) = convert(text, environ)["apps"].values()
    return next(s["config"] for s in app["services"] if s["serviceName"] == service)


def parsed(text: str, environ: dict | None = None, service: str = "web"):
    (app,) = parse_target_state(convert(text, environ)).apps
    return app.service(service).config


def web(body: str, extra: str = "") -> str:
    indented = "\n".join("    " + line for line in body.strip().splitlines())
    return f"services:\n  web:\n    image: busybox:1\n{indented}\n{extra}"


def refused(text: str, environ: dict | None = None) -> str:
    with pytest.raises(ComposeError) as error:
        convert(text, environ)
    return str(error.value)


# -- the document --------------------------------------------------------------------------------------------------

def test_a_minimal_file_is_one_app_named_after_the_project():
    target = convert("name: My-Site\nservices:\n  web:\n    image: nginx\n")
    assert target == {"apps": {"my-site": {"appId": "my-site", "appName": "my-site", "services": [
        {"serviceName": "web", "config": {"image": "nginx", "restart": "no"}}]}}}
    assert list(convert("services: {web: {image: x}}", default_name="Some Dir", app_name="Shop")["apps"]) == \
        ["somedir"]
    named = convert("services: {web: {image: x}}", app_id="shop", app_name="The shop")
    assert named["apps"]["shop"]["appName"] == "The shop"


def test_compose_restart_default_is_no_and_yaml_no_stays_a_string():
    assert parsed("services: {web: {image: x}}").restart == "no"
    assert parsed("services:\n  web:\n    image: x\n    restart: no\n").restart == "no"
    assert parsed("services:\n  web:\n    image: x\n    restart: on-failure:3\n").restart == "on-failure:3"


@pytest.mark.parametrize("text, problem", [
    ("services: {web: {build: .}}", "services.web.build: a device does not build images"),
    ("services: {web: {image: x, build: .}}", "services.web.build: a device does not build images"),
    ("services: {web: {image: x, env_file: .env}}", "services.web.env_file: the file is on the operator's machine"),
    ("services: {web: {image: x, healthcheck: {test: [RUN, 'true']}}}", "services.web.healthcheck.test"),
    ("services: {web: {image: x, container_name: w}}", "services.web.container_name: Fleetlet names containers"),
    ("services: {web: {image: x, frobnicate: 1}}", "services.web.frobnicate: not supported"),
    ("services: {web: {image: x, deploy: {replicas: 2}}}", "services.web.deploy.replicas: not supported"),
    ("services: {web: {image: x}}\nsecrets: {}", "secrets: not supported"),
    ("services: {web: {image: x}}\nvolumes: {data: {driver: nfs}}", "volumes.data.driver: only local"),
    ("services: {web: {image: x}}\nvolumes: {data: {external: true}}", "volumes.data.external: not supported"),
    ("services: {web: {image: x}}\nnetworks: {n: {driver: overlay}}", "networks.n.driver: only bridge"),
    ("services: {web: {image: x, volumes: [data:/data]}}", "volume 'data' is not declared under the top-level"),
    ("services: {web: {image: x, networks: [back]}}", "network 'back' is not declared under the top-level"),
    ("services: {web: {image: x, networks: {n: {aliases: [a]}}}}\nnetworks: {n: }", "aliases"),
    ("services: {web: {image: x, volumes: [./data:/data]}}", "a relative bind mount"),
    ("services: {web: {image: x, volumes: [/data]}}", "anonymous volumes are not supported"),
    ("services: {web: {image: x, volumes: ['/a:/b:z']}}", "only the ro and rw options"),
    ("services: {web: {image: x, volumes: [{type: npipe, source: a, target: /b}]}}", "must be volume, bind or tmpfs"),
    ("services: {web: {image: x, volumes: [{type: bind, source: rel, target: /b}]}}", "absolute path"),
    ("services: {web: {image: x, network_mode: bridge}}", "leave network_mode out"),
    ("services: {web: {image: x, network_mode: 'service:db'}}", "services.web.network_mode: must be one of"),
    ("services: {web: {image: x, mem_limit: lots}}", "services.web.mem_limit: 'lots' is not a size"),
    ("services: {web: {image: x, depends_on: [db]}}", "depends_on: unknown service 'db'"),
    ("services: {web: {image: x, depends_on: {db: {condition: service_healthy}}}, db: {image: x}}",
     "depends_on.db.condition: 'db' declares no healthcheck"),
    ("services: {web: {image: x, depends_on: {db: {condition: service_healthy}}},"
     " db: {image: x, healthcheck: {disable: true}}}", "depends_on.db.condition: 'db' declares no healthcheck"),
    ("services: {web: {image: x, depends_on: {db: {condition: service_ready}}}, db: {image: x}}",
     "services.web.depends_on.db.condition: must be one of service_started, service_healthy"),
    ("services: {web: {image: x, depends_on: {db: {required: false}}}, db: {image: x}}", "optional dependencies"),
    ("services: {web: {image: x, ports: ['8000-8001:80']}}", "a host range must be as long"),
    ("services: {web: {image: x, ports: [{target: 80, mode: ingress}]}}", "ingress is Swarm's"),
    ("services: {web: {image: x, ports: [{target: 80, name: web}]}}", "services.web.ports[0].name: not supported"),
    ("services: {web: {image: x, ports: ['1-2000']}}", "at most 1024 ports"),
    ("services: {web: {image: x, ports: ['example.com:80:80']}}", "is not an IP address"),
    ("services: {web: {image: x, environment: [NOT_SET]}}", "NOT_SET has no value here and is not set"),
    ("services: [web]", "services: must be a mapping"),
    ("[1, 2]", "must hold a mapping with services"),
    ("services: {web: {image: '$NOPE'}}", "services.web.image: variable NOPE is not set"),
    ("services: {web: {image: '${NEED:?give NEED}'}}", "NEED is required: give NEED"),
    ("services: {web: {image: '${1bad}'}}", "is not ${NAME}"),
])
def test_what_cannot_be_applied_is_refused_with_its_path(text, problem):
    assert problem in refused(text)


# -- compose semantics ---------------------------------------------------------------------------------------------

def test_environment_as_a_list_or_a_map_and_from_the_operators_environment():
    as_list = parsed(web("environment: [A=1, 'B=x=y', C=, FROM_SHELL]"), {"FROM_SHELL": "s"})
    as_map = parsed(web("environment: {A: 1, B: x=y, C: '', FROM_SHELL: }"), {"FROM_SHELL": "s"})
    assert as_list == as_map
    assert dict(as_map.environment) == {"A": "1", "B": "x=y", "C": "", "FROM_SHELL": "s"}
    assert dict(parsed(web("environment: {ON: true, OFF: false, N: 1.5}")).environment) == {
        "N": "1.5", "OFF": "false", "ON": "true"}


@pytest.mark.parametrize("expression, environ, value", [
    ("${V}", {"V": "set"}, "set"), ("$V", {"V": "set"}, "set"), ("${V:-d}", {}, "d"), ("${V:-d}", {"V": ""}, "d"),
    ("${V-d}", {"V": ""}, ""), ("${V-d}", {}, "d"), ("${V:?x}", {"V": "v"}, "v"), ("${V:+alt}", {"V": "v"}, "alt"),
    ("${V:+alt}", {}, ""), ("${V+alt}", {"V": ""}, "alt"), ("$$V", {}, "$V"), ("a-${V:-b c}-d", {}, "a-b c-d"),
    ("$${V}", {}, "${V}"),
])
def test_interpolation_from_the_operators_environment(expression, environ, value):
    assert dict(parsed(web(f"environment: {{X: '{expression}'}}"), environ).environment) == {"X": value}


def test_interpolation_reaches_every_value_ports_included():
    config = parsed(web("ports: ['${PORT:-8000}:80']\nmem_limit: ${MEM}"), {"MEM": "64m"})
    assert [m.spec() for m in config.ports] == ["8000:80/tcp"] and config.options.mem_limit == 64 * 1024 ** 2


@pytest.mark.parametrize("ports, specs", [
    (["3000"], ["3000/tcp"]),
    (["3000-3002"], ["3000/tcp", "3001/tcp", "3002/tcp"]),
    (["8000:8000"], ["8000:8000/tcp"]),
    (["9090-9091:8080-8081"], ["9090:8080/tcp", "9091:8081/tcp"]),
    (["49100:22"], ["49100:22/tcp"]),
    (["127.0.0.1:8001:8001"], ["127.0.0.1:8001:8001/tcp"]),
    (["127.0.0.1:5000-5001:5000-5001"], ["127.0.0.1:5000:5000/tcp", "127.0.0.1:5001:5001/tcp"]),
    (["127.0.0.1::5000"], ["127.0.0.1::5000/tcp"]),
    (["::1:6000:6000"], ["[::1]:6000:6000/tcp"]),
    (["[::1]:6001:6001"], ["[::1]:6001:6001/tcp"]),
    (["6060:6060/udp"], ["6060:6060/udp"]),
    (["12400-12401:1240-1241/udp"], ["12400:1240/udp", "12401:1241/udp"]),
    ([80], ["80/tcp"]),
    (["22:22"], ["22:22/tcp"]),  # YAML 1.1 would read an unquoted 22:22 as 1342
    ([{"target": 80, "host_ip": "127.0.0.1", "published": "8080", "protocol": "tcp", "mode": "host"}],
     ["127.0.0.1:8080:80/tcp"]),
    ([{"target": 53, "published": 5353, "protocol": "udp"}], ["5353:53/udp"]),
    ([{"target": 80}], ["80/tcp"]),
])
def test_ports_in_every_documented_syntax(ports, specs):
    unquoted = "ports: [" + ", ".join(json.dumps(p) if not isinstance(p, str) or p != "22:22" else p
                                      for p in ports) + "]"
    config = parsed(web(unquoted))
    assert sorted(m.spec() for m in config.ports) == sorted(specs)


def test_named_volumes_networks_binds_and_tmpfs_in_short_and_long_syntax():
    config = parsed(web("""
volumes:
  - data:/data
  - /etc/localtime:/etc/localtime:ro
  - {type: volume, source: logs, target: /logs, read_only: true}
  - {type: bind, source: /srv/app, target: /app}
  - {type: tmpfs, target: /cache, tmpfs: {size: 1048576}}
networks: [front, back]
""", "volumes: {data: , logs: {}}\nnetworks: {front: , back: {driver: bridge}}\n"))
    assert [m.spec() for m in config.volumes] == [  # sorted by the path in the container
        "/srv/app:/app:rw", "data:/data:rw", "/etc/localtime:/etc/localtime:ro", "logs:/logs:ro"]
    assert config.networks == ("back", "front") and config.options.tmpfs == (("/cache", "size=1048576"),)
    assert parsed(web("networks: {front: , default: }", "networks: {front: }")).networks == ("default", "front")


def test_depends_on_as_a_list_and_with_conditions():
    text = "services:\n  web: {image: x, depends_on: %s}\n  db: {image: x}\n  init: {image: x}\n"
    as_list = parsed(text % "[db, init]")
    conditions = parsed(text % "{db: {condition: service_started}, "
                               "init: {condition: service_completed_successfully, required: true}}")
    started = (("db", "service_started"), ("init", "service_started"))
    assert as_list.depends_on == conditions.depends_on == started
    assert parsed(text % "{db: {required: true}, init: {}}").depends_on == started  # compose's default condition


def test_depends_on_service_healthy_passes_through_and_waits_for_the_declared_healthcheck():
    text = """services:
  web: {image: x, depends_on: {db: {condition: service_healthy}, init: {condition: service_completed_successfully}}}
  db: {image: x, healthcheck: {test: [CMD, pg_isready], interval: 1s}}
  init: {image: x, restart: "no"}
"""
    assert config_of(text)["depends_on"] == {"db": {"condition": "service_healthy"},
                                             "init": {"condition": "service_completed_successfully"}}
    assert parsed(text).depends_on == (("db", "service_healthy"), ("init", "service_started"))


def test_every_option_passes_through_by_its_compose_name_and_deploy_resources_map():
    config = parsed(web("""
entrypoint: /bin/sh -c
command: ["sleep", "1"]
working_dir: /srv
user: "1000:1000"
hostname: box
extra_hosts: ["db:10.0.0.2"]
dns: 1.1.1.1
read_only: true
init: true
stop_signal: SIGINT
stop_grace_period: 30s
shm_size: 64m
ulimits: {nofile: {soft: 10, hard: 20}}
sysctls: [net.core.somaxconn=1024]
logging: {driver: local}
cap_add: [NET_ADMIN]
cap_drop: [MKNOD]
devices: [/dev/null]
privileged: true
pid: host
ipc: shareable
security_opt: [no-new-privileges]
expose: ["8080-8081", 9000/udp]
labels: [com.example.a=1]
deploy: {resources: {limits: {cpus: "0.5", memory: 1g, pids: 20}, reservations: {memory: 1m}}}
"""))
    options = config.options.set_options()
    assert set(options) == {
        "entrypoint", "working_dir", "user", "hostname", "extra_hosts", "dns", "read_only", "init", "stop_signal",
        "stop_grace_period", "shm_size", "ulimits", "sysctls", "pids_limit", "logging", "cap_add", "cap_drop",
        "devices", "privileged", "pid", "ipc", "security_opt", "expose", "cpus", "mem_limit", "mem_reservation"}
    assert options["expose"] == ("8080/tcp", "8081/tcp", "9000/udp") and options["pids_limit"] == 20
    assert config.labels == (("com.example.a", "1"),) and config.command == ("sleep", "1")
    assert "contradicts" in refused(web("mem_limit: 2g\ndeploy: {resources: {limits: {memory: 1g}}}"))


def test_a_healthcheck_passes_through_in_compose_syntax_and_is_normalised():
    service = parsed("services:\n  web:\n    image: x\n    healthcheck:\n      test: [CMD, /bin/true]\n"
                     "      interval: 1m30s\n      retries: 3\n")
    assert service.healthcheck == Healthcheck(("CMD", "/bin/true"), interval=90 * 10**9, retries=3)
    assert parsed("services: {web: {image: x, healthcheck: {disable: true}}}").healthcheck == Healthcheck(("NONE",))


def test_network_mode_host_and_none():
    assert parsed(web("network_mode: host")).options.network_mode == "host"
    assert parsed(web("network_mode: none")).networks == ()


# -- YAML as compose reads it --------------------------------------------------------------------------------------

def test_yaml_duplicate_keys_are_refused_but_merges_may_override():
    assert "key 'image' is given twice" in refused("services:\n  web:\n    image: a\n    image: b\n")
    config = config_of("x-base: &base {image: a, restart: always}\nservices:\n  web:\n    <<: *base\n"
                       "    restart: unless-stopped\n")
    assert config == {"image": "a", "restart": "unless-stopped"}


def test_yaml_scalars_are_yaml_1_2():
    assert load_compose_yaml(b"a: no\nb: yes\nc: on\nd: 22:22\ne: 0777\nf: true\ng: ~\nh: 2026-01-01\n") == {
        "a": "no", "b": "yes", "c": "on", "d": "22:22", "e": 777, "f": True, "g": None, "h": "2026-01-01"}


def test_yaml_is_bounded():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(20))
    with pytest.raises(ComposeError, match=f"expands to more than {MAX_NODES} values"):
        load_compose_yaml(bomb.encode())
    many = "a: &a x\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n"
    with pytest.raises(ComposeError, match=f"more than {MAX_ALIASES} alias uses"):
        load_compose_yaml(many.encode())
    with pytest.raises(ComposeError, match="nested deeper than"):
        load_compose_yaml(b"a: " + b"[" * 100 + b"]" * 100)
    with pytest.raises(ComposeError, match=f"more than {MAX_FILE_BYTES}"):
        load_compose_yaml(b"#" * (MAX_FILE_BYTES + 1))
    with pytest.raises(ComposeError, match="not UTF-8"):
        load_compose_yaml(b"a: \xff\n")
    with pytest.raises(ComposeError, match="not valid YAML"):
        load_compose_yaml(b"a: [\n")


def test_a_target_document_is_told_from_a_compose_file():
    assert not looks_like_compose(b'{"apps": {}}')
    assert looks_like_compose(b"services: {web: {image: x}}") and looks_like_compose(b'{"services": {}}')


# -- the command line ----------------------------------------------------------------------------------------------

def test_run_py_target_from_compose_prints_the_target_and_refusals_exit_2(tmp_path):
    project = tmp_path / "Garden"
    project.mkdir()
    (project / "compose.yaml").write_text("services:\n  web:\n    image: busybox\n    ports: ['${P:-8080}:80']\n")
    done = subprocess.run([sys.executable, "run.py", "target", "from-compose", str(project / "compose.yaml"),
                           "--app-name", "Garden app"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"P": "9000", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["apps"]["garden"]["appName"] == "Garden app"
    assert document["apps"]["garden"]["services"][0]["config"]["ports"] == ["9000:80"]
    (project / "compose.yaml").write_text("services:\n  web:\n    build: .\n")
    failed = subprocess.run([sys.executable, "run.py", "target", "from-compose", str(project / "compose.yaml")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 2
    assert failed.stderr.strip().endswith("compose.yaml: services.web.build: a device does not build images: "
                                          "build and push it, then name it in image")
