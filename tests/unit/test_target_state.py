import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messages.protocol.target_state import (
    MAX_DOCUMENT_BYTES,
    InvalidTargetState,
    PortMapping,
    ServiceConfig,
    TargetState,
    VolumeMount,
    config_field_hashes,
    config_hash,
    limits,
    normalise_image,
    parse_target_state,
    to_json,
)
from messages.protocol.target_state.limits import MAX_SERVICES_PER_APP

SEED = {"apps": {"1": {"appId": 1, "appName": "my-app", "services": [{
    "serviceId": 101, "serviceName": "web", "imageName": "nginx:latest",
    "config": {"image": "nginx:latest", "ports": ["80:80"], "environment": {"KEY": "value"},
               "volumes": ["data:/var/lib/data"], "networks": ["frontend"]}}]}}}


def document(**config) -> dict:
    """A one-app document whose service `web` has `config` (image defaults to busybox)."""
    return {"apps": {"1": {"appId": 1, "appName": "a", "services": [
        {"serviceName": "web", "config": {"image": "busybox", **config}}]}}}


def only_service(target: TargetState):
    (app,) = target.apps
    (service,) = app.services
    return service


def rejection(raw) -> str:
    with pytest.raises(InvalidTargetState) as caught:
        parse_target_state(raw)
    return caught.value.reason


def test_seed_document_parses_into_normalised_dataclasses():
    target = parse_target_state(json.dumps(SEED).encode())
    app = target.app("1")
    assert (app.app_id, app.app_name) == ("1", "my-app")
    web = app.service("web")
    assert web.service_id == 101
    assert web.config == ServiceConfig(
        image="nginx:latest",
        ports=(PortMapping(container_port=80, host_port=80),),
        environment=(("KEY", "value"),),
        volumes=(VolumeMount(target="/var/lib/data", volume="data"),),
        networks=("frontend",),
    )


def test_defaults_of_a_minimal_service():
    config = only_service(parse_target_state(document())).config
    assert config.image == "busybox:latest"
    assert config.networks == ("default",)
    assert (config.command, config.running, config.restart, config.update_strategy) == (
        None, True, "always", "download-then-kill")
    assert config.ports == config.volumes == config.environment == config.labels == config.depends_on == ()


def test_app_id_and_app_name_are_optional():
    target = parse_target_state({"apps": {"7": {"services": []}}})
    assert target.app("7").app_name == ""


def test_bytes_str_and_dict_inputs_agree():
    assert parse_target_state(json.dumps(SEED)) == parse_target_state(json.dumps(SEED).encode()) == \
        parse_target_state(SEED)


def test_input_document_is_not_modified():
    raw = copy.deepcopy(SEED)
    parse_target_state(raw)
    assert raw == SEED


def test_canonical_json_round_trips_and_is_a_fixed_point():
    target = parse_target_state(SEED)
    canonical = to_json(target)
    assert parse_target_state(canonical) == target
    assert to_json(parse_target_state(json.dumps(canonical))) == canonical
    config = canonical["apps"]["1"]["services"][0]["config"]
    assert config["ports"] == ["80:80/tcp"] and config["volumes"] == ["data:/var/lib/data:rw"]


def test_services_and_apps_are_sorted_so_order_does_not_matter():
    def doc(names):
        return {"apps": {app: {"services": [{"serviceName": name, "config": {"image": "x"}} for name in names]}
                         for app in (names[0] + "app", names[1] + "app")}}
    assert parse_target_state(doc(["b", "a"])) == parse_target_state(doc(["a", "b"]))


@pytest.mark.parametrize("spelling, canonical", [
    ("busybox", "busybox:latest"),
    ("docker.io/library/busybox", "busybox:latest"),
    ("index.docker.io/library/busybox:1.36", "busybox:1.36"),
    ("docker.io/acme/app:2", "acme/app:2"),
    ("localhost:5000/app", "localhost:5000/app:latest"),
    ("registry.example.com:5000/team/app:v1", "registry.example.com:5000/team/app:v1"),
    ("app:v1@sha256:" + "a" * 64, "app@sha256:" + "a" * 64),
])
def test_image_names_are_normalised_to_dockers_spelling(spelling, canonical):
    assert normalise_image(spelling) == canonical
    assert only_service(parse_target_state(document(image=spelling))).config.image == canonical


@pytest.mark.parametrize("first, second", [
    ({"environment": {"A": "1", "B": "2"}}, {"environment": {"B": "2", "A": "1"}}),
    ({"environment": {"A": "1", "B": "2"}}, {"environment": ["B=2", "A=1"]}),
    ({"environment": {"PORT": 8080}}, {"environment": {"PORT": "8080"}}),
    ({"ports": ["80"]}, {"ports": [80]}),
    ({"ports": ["80:80"]}, {"ports": ["80:80/tcp"]}),
    ({"ports": ["0.0.0.0:8080:80"]}, {"ports": ["8080:080"]}),
    ({"ports": ["1:1", "2:2"]}, {"ports": ["2:2", "1:1"]}),
    ({"volumes": ["data:/srv/data/"]}, {"volumes": ["data:/srv/data:rw"]}),
    ({"networks": []}, {"networks": ["default"]}),
    ({"networks": ["b", "a"]}, {"networks": ["a", "b"]}),
    ({"command": "sh -c 'echo hi'"}, {"command": ["sh", "-c", "echo hi"]}),
    ({"command": []}, {}),
    ({"image": "busybox"}, {"image": "docker.io/library/busybox:latest"}),
    ({"labels": {"b": "1", "a": "2"}}, {"labels": {"a": "2", "b": "1"}}),
    ({}, {"running": True, "restart": "always", "update_strategy": "download-then-kill"}),
])
def test_equivalent_spellings_parse_and_hash_the_same(first, second):
    one = only_service(parse_target_state(document(**first)))
    other = only_service(parse_target_state(document(**second)))
    assert one == other
    assert config_hash(one) == config_hash(other)


@pytest.mark.parametrize("field, value", [
    ("image", "busybox:2"), ("ports", ["81:80"]), ("environment", {"A": "2"}), ("volumes", ["other:/srv"]),
    ("networks", ["back"]), ("command", ["sleep", "2"]), ("restart", "no"), ("labels", {"team": "b"}),
])
def test_every_container_defining_field_changes_the_hash_and_only_its_field_hash(field, value):
    base = {"ports": ["80:80"], "environment": {"A": "1"}, "volumes": ["data:/srv"], "command": ["sleep", "1"],
            "labels": {"team": "a"}}
    before = only_service(parse_target_state(document(**base)))
    after = only_service(parse_target_state(document(**{**base, field: value})))
    assert config_hash(before) != config_hash(after)
    changed = {name for name, digest in config_field_hashes(after).items()
               if config_field_hashes(before)[name] != digest}
    assert changed == {field}


@pytest.mark.parametrize("field, value", [
    ("running", False), ("update_strategy", "kill-then-download"), ("depends_on", ["db"])])
def test_planner_only_fields_do_not_change_the_hash(field, value):
    def service(**config):
        doc = {"apps": {"1": {"services": [{"serviceName": "db", "config": {"image": "x"}},
                                           {"serviceName": "web", "config": {"image": "x", **config}}]}}}
        return parse_target_state(doc).app("1").service("web")
    assert config_hash(service()) == config_hash(service(**{field: value}))


def test_hash_is_a_sha256_hex_digest():
    digest = config_hash(only_service(parse_target_state(document())))
    assert len(digest) == 64 and int(digest, 16) >= 0


@pytest.mark.parametrize("spec, expected", [
    ("8080:80/udp", PortMapping(80, "udp", 8080)),
    ("127.0.0.1:8080:80", PortMapping(80, "tcp", 8080, "127.0.0.1")),
    ("127.0.0.1::80", PortMapping(80, "tcp", None, "127.0.0.1")),
    ("[::1]:53:53/sctp", PortMapping(53, "sctp", 53, "::1")),
    ("65535", PortMapping(65535)),
])
def test_port_specs(spec, expected):
    (mapping,) = only_service(parse_target_state(document(ports=[spec]))).config.ports
    assert mapping == expected
    assert only_service(parse_target_state(document(ports=[mapping.spec()]))).config.ports == (mapping,)


def test_long_dependency_chains_validate_without_recursion():
    last = MAX_SERVICES_PER_APP - 1
    services = [{"serviceName": f"s{index}", "config": {"image": "x", "depends_on": [f"s{index - 1}"] if index else []}}
                for index in range(MAX_SERVICES_PER_APP)]
    target = parse_target_state({"apps": {"1": {"services": services}}})
    assert target.app("1").service(f"s{last}").config.depends_on == ((f"s{last - 1}", "service_started"),)


def test_a_long_cycle_is_named():
    count = MAX_SERVICES_PER_APP
    services = [{"serviceName": f"s{index}", "config": {"image": "x", "depends_on": [f"s{(index + 1) % count}"]}}
                for index in range(count)]
    reason = rejection({"apps": {"1": {"services": services}}})
    assert reason == ("apps.1.services: depends_on cycle s0 -> s1 -> s2 -> s3 -> s4 -> s5 -> s6 -> s7 -> "
                      f"... ({count} services)")


def test_rejection_is_a_value_error_with_the_reason():
    with pytest.raises(ValueError, match=r"^apps\.1\.services\[0\]\.config\.ports\[0\]: "):
        parse_target_state(document(ports=["x"]))


def with_app(**app) -> dict:
    return {"apps": {"1": {"services": [{"serviceName": "web", "config": {"image": "x"}}], **app}}}


def with_service(**service) -> dict:
    return {"apps": {"1": {"services": [{"serviceName": "web", "config": {"image": "x"}, **service}]}}}


def two_services(web: dict, db: dict) -> dict:
    return {"apps": {"1": {"services": [{"serviceName": "web", "config": {"image": "x", **web}},
                                        {"serviceName": "db", "config": {"image": "x", **db}}]}}}


PATH = "apps.1.services[0].config"


@pytest.mark.parametrize("raw, path, words", [
    (b"{", "document", "not valid JSON"),
    (b"\xff\xfe", "document", "not UTF-8"),
    (b'{"apps": {}, "apps": {}}', "document", "duplicate key 'apps'"),
    (b'{"apps": {"1": {"services": [{"serviceName": "w", "config": {"image": "x", "environment": {"A": NaN}}}]}}}',
     "document", "NaN is not allowed"),
    (b"[" * 100_000 + b"]" * 100_000, "document", "nested too deeply"),
    (b" " * (MAX_DOCUMENT_BYTES + 1), "document", "exceeds the limit"),
    ({"apps": {"1": {"appName": "x" * MAX_DOCUMENT_BYTES, "services": []}}}, "document", "exceeds the limit"),
    ({"apps": {"1": {"services": [], "extra": object()}}}, "document", "not representable as JSON"),
    (b"[]", "document", "must be an object, not array"),
    ({}, "document.apps", "required field is missing"),
    ({"apps": {}, "version": 3}, "document.version", "unknown field"),
    ({"apps": []}, "apps", "must be an object"),
    ({"apps": {"bad name": {"services": []}}}, "apps.bad name", "does not match"),
    ({"apps": {"_x": {"services": []}}}, "apps._x", "does not match"),
    ({"apps": {"a" * 64: {"services": []}}}, "apps." + "a" * 64, "does not match"),
    (with_app(appId=2), "apps.1.appId", "does not match its key '1'"),
    (with_app(appId=True), "apps.1.appId", "does not match its key"),
    (with_app(appName=5), "apps.1.appName", "must be a string, not integer"),
    (with_app(owner="me"), "apps.1.owner", "unknown field"),
    ({"apps": {"1": {"services": {}}}}, "apps.1.services", "must be an array, not object"),
    ({"apps": {"1": {}}}, "apps.1.services", "required field is missing"),
    (with_service(serviceName="we b"), "apps.1.services[0].serviceName", "does not match"),
    (with_service(serviceId=1.5), "apps.1.services[0].serviceId", "must be an integer or a string"),
    (with_service(serviceId=False), "apps.1.services[0].serviceId", "must be an integer or a string"),
    (with_service(imageName="y"), "apps.1.services[0].imageName", "differs from config.image"),
    (with_service(extra=1), "apps.1.services[0].extra", "unknown field"),
    ({"apps": {"1": {"services": [{"serviceName": "web", "config": {"image": "x"}}] * 2}}},
     "apps.1.services[1].serviceName", "duplicate service name 'web'"),
    ({"apps": {"1": {"services": [{"serviceName": "web"}]}}}, "apps.1.services[0].config", "required field"),
    (document(image=None), f"{PATH}.image", "must be a string, not null"),
    (document(image="Upper/Case"), f"{PATH}.image", "not a valid image reference"),
    (document(image="busybox:"), f"{PATH}.image", "not a valid image reference"),
    (document(image="a//b"), f"{PATH}.image", "not a valid image reference"),
    (document(image="a" * 300), f"{PATH}.image", "longer than 255"),
    (document(container_name="x"), f"{PATH}.container_name", "unknown field"),
    (document(privileged="yes"), f"{PATH}.privileged", "must be a boolean"),
    (document(ports="80:80"), f"{PATH}.ports", "must be an array"),
    (document(ports=["80:80:80:80"]), f"{PATH}.ports[0]", "is not a port spec"),
    (document(ports=["8000-8010:8000-8010"]), f"{PATH}.ports[0]", "is not a port spec"),
    (document(ports=["80/http"]), f"{PATH}.ports[0]", "unknown protocol 'http'"),
    (document(ports=["70000:80"]), f"{PATH}.ports[0]", "port 70000 is outside 1-65535"),
    (document(ports=[0]), f"{PATH}.ports[0]", "port 0 is outside"),
    (document(ports=[True]), f"{PATH}.ports[0]", "must be a string, not boolean"),
    (document(ports=[{"target": 80}]), f"{PATH}.ports[0]", "must be a string, not object"),
    (document(ports=["999.1.1.1:80:80"]), f"{PATH}.ports[0]", "invalid host address"),
    (document(ports=["[127.0.0.1]:80:80"]), f"{PATH}.ports[0]", "in brackets"),
    (document(ports=["80:80", "80:80/tcp"]), f"{PATH}.ports[1]", "duplicate port mapping '80:80/tcp'"),
    (document(ports=["80:80", "127.0.0.1:80:81"]), f"{PATH}.ports[1]", "host port 80/tcp is bound twice"),
    (document(environment={"A": True}), f"{PATH}.environment.A", "must be a string, not boolean"),
    (document(environment={"A": None}), f"{PATH}.environment.A", "must be a string, not null"),
    (document(environment={"A=B": "1"}), f"{PATH}.environment", "invalid variable name 'A=B'"),
    (document(environment={"": "1"}), f"{PATH}.environment", "invalid variable name ''"),
    (document(environment={"A": "x\0y"}), f"{PATH}.environment.A", "NUL"),
    (document(environment=["A"]), f"{PATH}.environment[0]", "is not NAME=VALUE"),
    (document(environment=["A=1", "A=2"]), f"{PATH}.environment", "variable 'A' is set twice"),
    (document(environment="A=1"), f"{PATH}.environment", "must be an object, not string"),
    (document(volumes=["etc:etc"]), f"{PATH}.volumes[0]", "is not volume:/container/path"),
    (document(volumes=["./x:/x"]), f"{PATH}.volumes[0]", "a bind mount needs an absolute host path"),
    (document(volumes=["data"]), f"{PATH}.volumes[0]", "is not volume:/container/path"),
    (document(volumes=["data:relative"]), f"{PATH}.volumes[0]", "is not volume:/container/path"),
    (document(volumes=["data:/x:rx"]), f"{PATH}.volumes[0]", "is not volume:/container/path"),
    (document(volumes=["a:/x", "b:/x/"]), f"{PATH}.volumes[1]", "'/x' is mounted twice"),
    (document(networks=["a b"]), f"{PATH}.networks[0]", "does not match"),
    (document(networks=["a", "a"]), f"{PATH}.networks", "'a' is listed twice"),
    (document(networks="a"), f"{PATH}.networks", "must be an array"),
    (document(command=5), f"{PATH}.command", "must be an array, not integer"),
    (document(command=["sh", 1]), f"{PATH}.command[1]", "must be a string"),
    (document(command="sh -c 'x"), f"{PATH}.command", "cannot be split"),
    (document(running="yes"), f"{PATH}.running", "must be a boolean, not string"),
    (document(restart="sometimes"), f"{PATH}.restart", "must be one of no, always"),
    (document(update_strategy="yolo"), f"{PATH}.update_strategy", "must be one of download-then-kill"),
    (document(labels={"io.fleetlet.owner": "x"}), f"{PATH}.labels.io.fleetlet.owner", "must be non-empty and not"),
    (document(labels={"a": 1}), f"{PATH}.labels.a", "must be a string, not integer"),
    (document(depends_on=["db"]), f"{PATH}.depends_on", "unknown service 'db'"),
    (document(depends_on=["web"]), "apps.1.services", "depends_on cycle web -> web"),
    (document(depends_on="db"), f"{PATH}.depends_on", "must be an array"),
    (two_services({"depends_on": ["db"]}, {"depends_on": ["web"]}), "apps.1.services",
     "depends_on cycle db -> web -> db"),
    (two_services({"depends_on": ["db"]}, {"running": False}), f"{PATH}.depends_on",
     "'db' has running: false, so this service could never start"),
    (two_services({"depends_on": {"db": {"condition": "service_healthy"}}}, {}), f"{PATH}.depends_on.db.condition",
     "'db' declares no healthcheck, so it could never be healthy"),
    (two_services({"depends_on": {"db": {"condition": "service_healthy"}}}, {"healthcheck": {"disable": True}}),
     f"{PATH}.depends_on.db.condition", "'db' declares no healthcheck"),
    (two_services({"depends_on": {"db": {"condition": "service_ready"}}}, {}), f"{PATH}.depends_on.db.condition",
     "must be one of service_started, service_healthy, service_completed_successfully"),
    (two_services({"depends_on": {"db": {"required": True}}}, {}), f"{PATH}.depends_on.db.required", "unknown field"),
    (two_services({"depends_on": {"db": "service_healthy"}}, {}), f"{PATH}.depends_on.db", "must be an object"),
    (two_services({"depends_on": {"d b": {}}}, {}), f"{PATH}.depends_on", "does not match"),
    (two_services({"depends_on": {"db": {"condition": "service_healthy"}}},
                  {"healthcheck": {"test": "true"}, "running": False}),
     f"{PATH}.depends_on", "'db' has running: false"),
])
def test_rejections_name_the_path_and_the_problem(raw, path, words):
    reason = rejection(raw)
    assert reason.startswith(f"{path}: ")
    assert words in reason


HEALTHY_DB = {"healthcheck": {"test": ["CMD", "pg_isready"], "interval": "1s"}}


def test_depends_on_long_form_normalises_and_keeps_service_healthy():
    web = parse_target_state(two_services({"depends_on": {"db": {"condition": "service_healthy"}}},
                                          HEALTHY_DB)).app("1").service("web")
    assert web.config.depends_on == (("db", "service_healthy"),) and web.config.dependency_names == ("db",)
    assert to_json(parse_target_state(two_services({"depends_on": {"db": {"condition": "service_healthy"}}},
                                                   HEALTHY_DB)))["apps"]["1"]["services"][1]["config"][
        "depends_on"] == {"db": {"condition": "service_healthy"}}
    started = [two_services({"depends_on": spelling}, HEALTHY_DB) for spelling in (
        ["db"], {"db": {}}, {"db": {"condition": "service_started"}},
        {"db": {"condition": "service_completed_successfully"}})]
    targets = [parse_target_state(document) for document in started]
    assert all(target == targets[0] for target in targets)  # four spellings of one meaning
    # ... whose canonical form is the list, as before conditions existed
    assert to_json(targets[0])["apps"]["1"]["services"][1]["config"]["depends_on"] == ["db"]


def test_a_healthy_dependency_does_not_change_the_hash():
    def web(depends_on):
        return parse_target_state(two_services({"depends_on": depends_on}, HEALTHY_DB)).app("1").service("web")
    assert config_hash(web(["db"])) == config_hash(web({"db": {"condition": "service_healthy"}}))


def test_a_stopped_service_may_depend_on_a_stopped_one():
    doc = two_services({"depends_on": ["db"], "running": False}, {"running": False})
    assert parse_target_state(doc).app("1").service("web").config.depends_on == (("db", "service_started"),)


# --- properties ----------------------------------------------------------------------------------------------

# Valid text: any Unicode scalar value except NUL (lone surrogates cannot be encoded and are refused)
TEXT = st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=5)
NAMES = st.builds(lambda first, rest: first + rest, st.sampled_from("aZ09"), st.text(alphabet="a0_.-", max_size=4))
PORT_SPECS = st.sampled_from(["80", "8080:80", "127.0.0.1:8081:80/udp", "[::1]:8082:443", "53/udp", 9000])


@st.composite
def configs(draw, earlier_services: list[str]) -> dict:
    config = {"image": draw(st.sampled_from(["busybox", "fleetlet-test/busybox:1", "localhost:5000/a/b:c"]))}
    optional = {
        "ports": st.lists(PORT_SPECS, unique_by=lambda spec: str(spec).split("/")[0], max_size=3),
        "environment": st.dictionaries(st.text(alphabet="AB_", min_size=1, max_size=3), TEXT, max_size=3),
        "volumes": st.lists(st.tuples(NAMES, st.sampled_from(["/a", "/b", "/c/d"]), st.sampled_from(["", ":ro"])),
                            unique_by=lambda volume: volume[1], max_size=3).map(
            lambda volumes: [f"{name}:{path}{mode}" for name, path, mode in volumes]),
        "networks": st.lists(NAMES, unique=True, max_size=3),
        "command": st.one_of(st.none(), st.lists(st.text(alphabet="ab -'\"", max_size=4), max_size=3)),
        "depends_on": st.one_of(  # the list form, or the long form with conditions that need no health check
            st.lists(st.sampled_from(earlier_services), unique=True),
            st.dictionaries(st.sampled_from(earlier_services), st.fixed_dictionaries({}, optional={
                "condition": st.sampled_from(["service_started", "service_completed_successfully"])}))
        ) if earlier_services else st.just([]),
        "restart": st.sampled_from(["no", "always", "unless-stopped", "on-failure"]),
        "labels": st.dictionaries(st.sampled_from(["a", "b.c"]), TEXT, max_size=2),
        "update_strategy": st.sampled_from(["download-then-kill", "kill-then-download"]),
    }
    for field in draw(st.sets(st.sampled_from(sorted(optional)))):
        config[field] = draw(optional[field])
    return config


@st.composite
def documents(draw) -> dict:
    apps = {}
    for app_id in draw(st.lists(NAMES, unique=True, max_size=3)):
        names = draw(st.lists(NAMES, unique=True, max_size=4))
        services = [{"serviceName": name, "config": draw(configs(names[:index]))} for index, name in enumerate(names)]
        apps[app_id] = {"appId": app_id, "appName": draw(TEXT), "services": services}
    return {"apps": apps}


@settings(max_examples=60, deadline=None)
@given(documents())
def test_valid_documents_round_trip_through_the_canonical_form(doc):
    target = parse_target_state(json.dumps(doc).encode())
    canonical = to_json(target)
    assert parse_target_state(canonical) == target
    assert to_json(parse_target_state(json.dumps(canonical))) == canonical
    for app in target.apps:
        for service in app.services:
            assert config_hash(service) == config_hash(parse_target_state(canonical).app(app.app_id).service(
                service.service_name))


@settings(max_examples=40, deadline=None)
@given(documents(), st.randoms(use_true_random=False))
def test_order_of_services_and_environment_does_not_matter(doc, random):
    shuffled = copy.deepcopy(doc)
    for app in shuffled["apps"].values():
        random.shuffle(app["services"])
        for service in app["services"]:
            env = list(service["config"].get("environment", {}).items())
            random.shuffle(env)
            if env:
                service["config"]["environment"] = [f"{key}={value}" for key, value in env]
    assert parse_target_state(shuffled) == parse_target_state(doc)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children,
                                                                                      max_size=3), max_leaves=15)


def mutations(doc: dict) -> st.SearchStrategy:
    """The document with one node replaced by arbitrary JSON."""
    paths = []

    def walk(node, path):
        paths.append(path)
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in children:
            walk(child, path + [key])
    walk(doc, [])

    def replace(path_and_value):
        path, value = path_and_value
        if not path:
            return value
        mutated = copy.deepcopy(doc)
        node = mutated
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return mutated
    return st.tuples(st.sampled_from(paths), JSON).map(replace)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_mutation_is_either_valid_or_rejected_with_invalid_target_state(data):
    doc = data.draw(documents())
    mutated = data.draw(mutations(doc))
    try:
        target = parse_target_state(json.dumps(mutated).encode())
    except InvalidTargetState as error:
        assert error.reason.split(": ", 1)[1]
    else:
        assert parse_target_state(to_json(target)) == target


@pytest.mark.parametrize("raw", [
    {"apps": {"1": {"services": [{"serviceName": "a", "config": {"image": "busybox", "labels": {"a": "\ud800"}}}]}}},
    b'{"apps": {"1": {"services": [{"serviceName": "a", "config": {"image": "busybox", '
    b'"labels": {"\\ud800": "x"}}}]}}}',
])
def test_lone_surrogates_are_rejected_as_invalid(raw):
    with pytest.raises(InvalidTargetState, match="not representable as JSON"):
        parse_target_state(raw)


def test_the_package_exports_exactly_its_public_names():
    import messages.protocol.target_state as package

    public = {name for name in vars(package) if not name.startswith("_")} - {
        "canonical", "dependencies", "fields", "health", "images", "limits", "model", "options", "parse", "registries",
    }  # the submodules themselves
    assert set(package.__all__) == public
    assert package.parse_target_state(package.to_json(package.TargetState())) == package.TargetState()


# -- hard limits, each refused with its own reason; digit runs bounded; linear time --------------------------------

def ports(count: int) -> list[str]:
    return [f"{1 + index % 65535}:{1 + index // 65535}" for index in range(count)]


@pytest.mark.parametrize("raw, path, problem", [
    ({"apps": {f"a{i}": {"services": []} for i in range(limits.MAX_APPS + 1)}}, "apps", "entries, more than"),
    ({"apps": {"1": {"services": [{"serviceName": f"s{i}", "config": {"image": "x"}}
                                  for i in range(MAX_SERVICES_PER_APP + 1)]}}}, "apps.1.services", "more than"),
    (document(ports=ports(limits.MAX_PORTS_PER_SERVICE + 1)), "apps.1.services[0].config.ports", "more than 1024"),
    (document(environment={f"K{i}": "v" for i in range(limits.MAX_ENVIRONMENT_ENTRIES + 1)}),
     "apps.1.services[0].config.environment", "more than"),
    (document(environment=[f"K{i}=v" for i in range(limits.MAX_ENVIRONMENT_ENTRIES + 1)]),
     "apps.1.services[0].config.environment", "more than"),
    (document(volumes=[f"v:/m{i}" for i in range(limits.MAX_VOLUMES_PER_SERVICE + 1)]),
     "apps.1.services[0].config.volumes", "more than"),
    (document(networks=[f"n{i}" for i in range(limits.MAX_NETWORKS_PER_SERVICE + 1)]),
     "apps.1.services[0].config.networks", "more than"),
    (document(labels={f"l{i}": "v" for i in range(limits.MAX_LABELS_PER_SERVICE + 1)}),
     "apps.1.services[0].config.labels", "more than"),
    (document(command=["x"] * (limits.MAX_COMMAND_ARGUMENTS + 1)), "apps.1.services[0].config.command", "more than"),
    (document(command="x " * (limits.MAX_COMMAND_ARGUMENTS + 1)), "apps.1.services[0].config.command", "more than"),
    (document(environment={"K": "v" * (limits.MAX_STRING_LENGTH + 1)}), "apps.1.services[0].config.environment.K",
     "longer than"),
    (document(environment=["K=" + "v" * (limits.MAX_STRING_LENGTH + 1)]), "apps.1.services[0].config.environment[0]",
     "longer than"),
    (document(environment={"K" * (limits.MAX_KEY_LENGTH + 1): "v"}), "apps.1.services[0].config.environment",
     "longer than"),
    (document(labels={"l": "v" * (limits.MAX_STRING_LENGTH + 1)}), "apps.1.services[0].config.labels.l", "longer than"),
    (document(ports=["1" * 5000]), "apps.1.services[0].config.ports[0]", "longer than"),  # was int()'s ValueError
    (document(ports=["1" * 60]), "apps.1.services[0].config.ports[0]", "is not a port spec"),
    (document(ports=["127.0.0.1:" + "9" * 50 + ":80"]), "apps.1.services[0].config.ports[0]", "is not a port spec"),
])
def test_each_limit_is_refused_with_its_own_reason_naming_the_path(raw, path, problem):
    reason = rejection(raw)
    assert reason.startswith(f"{path}: ") and problem in reason, reason


def test_a_port_spec_of_thousands_of_digits_is_an_invalid_target_state_not_a_value_error():
    for spec in ["9" * 4301, "1:" + "9" * 4301, "[::1]:" + "9" * 4301 + ":80", "80/" + "t" * 5000]:
        with pytest.raises(InvalidTargetState):
            parse_target_state(json.dumps(document(ports=[spec])))


def test_everything_up_to_the_limits_is_accepted():
    services = [{"serviceName": f"s{i}", "config": {
        "image": "busybox", "ports": ports(limits.MAX_PORTS_PER_SERVICE)[i::8] + [f"{60000 + i}:80"],
        "environment": {f"K{j}": "v" for j in range(limits.MAX_ENVIRONMENT_ENTRIES)},
        "labels": {f"l{j}": "v" for j in range(limits.MAX_LABELS_PER_SERVICE)},
        "volumes": [f"v:/m{j}" for j in range(limits.MAX_VOLUMES_PER_SERVICE)],
        "networks": [f"n{j}" for j in range(limits.MAX_NETWORKS_PER_SERVICE)]}} for i in range(8)]
    target = parse_target_state({"apps": {"1": {"services": services}}})
    assert len(target.app("1").service("s0").config.environment) == limits.MAX_ENVIRONMENT_ENTRIES


def hostile_megabyte_documents():
    """About 1 MiB each, the shapes validation was quadratic in (issue 14: 8,000 ports took 10 s)."""
    entry = lambda i: f"{1 + i % 60000}:{1 + i % 60000}"  # noqa: E731
    yield document(ports=[entry(i) for i in range(90_000)])  # over the limit: refused at its count
    yield {"apps": {"1": {"services": [{"serviceName": f"s{i}", "config": {  # a duplicate in the very last one
        "image": "x", "ports": ports(1023) + ["1:1" if i == 99 else "2:2/udp"]}} for i in range(100)]}}}
    yield document(environment=[f"K{i}=v" for i in range(100_000)])
    yield document(networks=[f"n{i}" for i in range(100_000)])
    yield {"apps": {"1": {"services": [{"serviceName": f"s{i}", "config": {
        "image": "x", "depends_on": [f"s{i + 1}"] if i < 40_000 else []}} for i in range(40_000)]}}}


@pytest.mark.parametrize("index", range(5))
def test_a_hostile_megabyte_document_is_rejected_in_linear_time(index):
    import time
    raw = json.dumps(list(hostile_megabyte_documents())[index]).encode()
    assert len(raw) >= 500_000
    started = time.process_time()
    with pytest.raises(InvalidTargetState):
        parse_target_state(raw)
    # A bound on the order of growth, not a performance figure (those are bench.validation's: about 0.3 s at
    # most here): quadratic validation took minutes for such a document, linear takes well under a second.
    assert time.process_time() - started < 5.0  # CPU time: other processes on the machine do not count


@settings(max_examples=400)
@given(st.text(st.sampled_from(" \t\r\n\x0b'\"\\ab\u00e9"), max_size=16))
def test_property_commands_split_exactly_as_shlex_splits_them_with_its_reasons(text):
    import shlex

    from messages.protocol.target_state.fields import split_arguments
    try:
        expected: object = shlex.split(text)
    except ValueError as error:
        expected = str(error)
    try:
        got: object = split_arguments(text)
    except ValueError as error:
        got = str(error)
    assert got == expected


def test_splitting_a_hostile_command_is_linear():
    import time
    raw = json.dumps({"apps": {"1": {"services": [
        {"serviceName": f"s{i}", "config": {"image": "x", "command": "a" * 65_000 + ("'" if i == 15 else "")}}
        for i in range(16)]}}})
    started = time.process_time()
    assert "No closing quotation" in rejection(raw)
    assert time.process_time() - started < 0.5  # shlex took 0.54 s on 2 cores for this 1 MiB
