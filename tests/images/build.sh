#!/bin/sh
# Build the local test images fleetlet-test/busybox:1 and :2 (distinct image ids) from /usr/bin/busybox.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$here/Dockerfile" "$context/"
cp "${BUSYBOX:-/usr/bin/busybox}" "$context/busybox"
for variant in 1 2; do
    DOCKER_BUILDKIT=0 docker build --quiet --build-arg "VARIANT=$variant" \
        --tag "fleetlet-test/busybox:$variant" "$context" >/dev/null
done
