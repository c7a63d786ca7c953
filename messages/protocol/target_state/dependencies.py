"""The `depends_on` field of a service config: compose's list of names, or its long form with conditions.

`["db"]` and `{"db": {"condition": "service_started"}}` mean the same; `service_completed_successfully` is
normalised to `service_started` (see `model.DEPENDENCY_CONDITIONS`); `service_healthy` needs the dependency
to declare a `healthcheck` in its config, because an image's own HEALTHCHECK is unknown when the document is
checked and a dependency without one would never become healthy.
"""
from __future__ import annotations

from typing import Any, Mapping

from messages.protocol.target_state import limits
from messages.protocol.target_state.fields import _check_count, _fail, _name, _require_object, _unique_names
from messages.protocol.target_state.model import (
    DEPENDENCY_CONDITIONS,
    SERVICE_COMPLETED_SUCCESSFULLY,
    SERVICE_HEALTHY,
    SERVICE_STARTED,
    Service,
)

Dependencies = tuple[tuple[str, str], ...]


def parse_dependencies(value: Any, path: str) -> Dependencies:
    """(name, condition) pairs sorted by name; the services named are checked with the app (`check_dependencies`)."""
    if not isinstance(value, dict):
        return tuple((name, SERVICE_STARTED) for name in _unique_names(value, path, limits.MAX_SERVICES_PER_APP))
    _check_count(value, path, limits.MAX_SERVICES_PER_APP)
    pairs = []
    for key, spec in value.items():
        name = _name(key, path)
        _require_object(spec, f"{path}.{name}", required=(), optional=("condition",))
        condition = spec.get("condition", SERVICE_STARTED)
        if condition not in DEPENDENCY_CONDITIONS:
            raise _fail(f"{path}.{name}.condition", f"must be one of {', '.join(DEPENDENCY_CONDITIONS)}")
        pairs.append((name, SERVICE_STARTED if condition == SERVICE_COMPLETED_SUCCESSFULLY else condition))
    return tuple(sorted(pairs))


def dependencies_to_json(dependencies: Dependencies) -> list[str] | dict[str, dict[str, str]]:
    """The canonical form: a list of names while no condition is service_healthy (so documents written before
    conditions existed keep their canonical form), else the long form."""
    if all(condition == SERVICE_STARTED for _, condition in dependencies):
        return [name for name, _ in dependencies]
    return {name: {"condition": condition} for name, condition in dependencies}


def check_dependencies(service: Service, by_name: Mapping[str, Service], path: str) -> None:
    """Every dependency is a service of the app that can start, and healthy if it is waited on as such."""
    for dependency, condition in service.config.depends_on:
        if dependency not in by_name:
            raise _fail(path, f"unknown service {dependency!r}")
        config = by_name[dependency].config
        if service.config.running and not config.running:
            raise _fail(path, f"{dependency!r} has running: false, so this service could never start")
        if condition == SERVICE_HEALTHY and (config.healthcheck is None or config.healthcheck.disabled):
            raise _fail(f"{path}.{dependency}.condition", f"{dependency!r} declares no healthcheck, so it could "
                        "never be healthy (an image's own HEALTHCHECK is not known here: declare it in the config)")
