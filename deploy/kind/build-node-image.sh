#!/usr/bin/env bash
# Build a kind node image that runs criservice (deploy/kind/Dockerfile).
#   deploy/kind/build-node-image.sh [TAG]     default TAG criservice-kind-node:v1.37.2
#   KIND_NODE_IMAGE=kindest/node:vX.Y.Z@sha256:... to start from another kind node image
# Needs docker (or DOCKER=podman) and PyPI for criservice's dependencies.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TAG=${1:-criservice-kind-node:v1.37.2}
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.37.2}
DOCKER=${DOCKER:-docker}

dist=$ROOT/deploy/kind/dist
rm -rf "$dist"
python3 -m pip wheel --quiet --no-deps --wheel-dir "$dist" "$ROOT"
"$DOCKER" build -f "$ROOT/deploy/kind/Dockerfile" --build-arg "KIND_NODE_IMAGE=$KIND_NODE_IMAGE" \
    -t "$TAG" "$ROOT/deploy"
echo "built $TAG; now: kind create cluster --config $ROOT/deploy/kind/kind-cluster.yaml"
