#!/bin/sh
# Build the registry test images, tagged for the registry given as $1 (HOST:PORT), without pushing them:
#   $1/fleetlet-test/app:1, :2, :3  several tags of one multi-layer image (busybox, its links, a variant layer):
#                                   the two base layers are shared, the last one differs
#   $1/fleetlet-test/big:1          busybox plus a generated layer of ${BIG_MIB:-64} MiB of random bytes
# The random layer is generated here, never committed. Everything FROM scratch, from the host's static busybox.
set -eu
registry=$1
here=$(cd "$(dirname "$0")" && pwd)
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$here/Dockerfile" "$here/Dockerfile.big" "$context/"
cp "${BUSYBOX:-/usr/bin/busybox}" "$context/busybox"
for variant in 1 2 3; do
    DOCKER_BUILDKIT=0 docker build --quiet --build-arg "VARIANT=app-$variant" \
        --tag "$registry/fleetlet-test/app:$variant" "$context" >/dev/null
done
head -c "$(( ${BIG_MIB:-64} * 1024 * 1024 ))" /dev/urandom > "$context/blob"
DOCKER_BUILDKIT=0 docker build --quiet --file "$context/Dockerfile.big" --tag "$registry/fleetlet-test/big:1" \
    "$context" >/dev/null
