"""Image references: Docker's reference grammar, and the one normal spelling the engine lists images by.

The planner compares the target's image with the engine's image list, so both sides must use `normalise_image`.
"""
from __future__ import annotations

import re
from typing import Any

from messages.protocol.target_state.fields import _fail, _string

MAX_IMAGE_LENGTH = 255
_DOMAIN = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# Docker's reference grammar: [domain[:port]/]path[:tag][@digest]
IMAGE_PATTERN = re.compile(
    rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?(?:@[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,})?"
)
_DOCKER_HUB_PREFIXES = ("docker.io/", "index.docker.io/")


def normalise_image(name: str) -> str:
    """Docker's familiar spelling, as the engine lists images: no docker.io/library prefix, a digest wins
    over a tag, ":latest" when there is neither."""
    for prefix in _DOCKER_HUB_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            name = name[len("library/"):] if name.startswith("library/") else name
            break
    repository, at, digest = name.partition("@")
    directory, slash, last_component = repository.rpartition("/")
    if at:
        return f"{directory}{slash}{last_component.partition(':')[0]}@{digest}"
    return name if ":" in last_component else f"{name}:latest"


def _image(value: Any, path: str) -> str:
    image = _string(value, path, MAX_IMAGE_LENGTH)
    if not IMAGE_PATTERN.fullmatch(image):
        raise _fail(path, f"{image!r} is not a valid image reference")
    return normalise_image(image)
