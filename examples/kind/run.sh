#!/usr/bin/env bash
# Every step of the README's kind path after
#   kind create cluster --config examples/kind/cluster.yaml
# from the repository root: build the images and load them into the cluster, install the chart,
# start the example origin and upload examples/site into it, apply the example Distribution,
# wait until it is Ready, and GET the site twice through an edge (Miss, then Hit).
#
#   examples/kind/run.sh
#
# Needs docker and kind (for the images), helm, kubectl, curl and the aws CLI (the upload).
# Settings, from the environment:
#   KIND_CLUSTER   the kind cluster to load the images into (default: kind)
#   IMAGES         docker (default): build the three images with their Dockerfiles and `kind load`
#                  them; loaded: they are on the nodes already (the repository's tests build them
#                  without Docker, tests/cluster/images.sh, and import them into their node)
#   EDGE_NODE      GET through an edge on this node (default: whichever edge kubectl lists first)
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=$(awk -F'"' '/^appVersion:/ { print $2 }' charts/edgefleet/Chart.yaml)
OPERATOR_IMAGE=ghcr.io/edgefleet/operator:$VERSION
EDGE_IMAGE=ghcr.io/edgefleet/edge:$VERSION
ORIGIN_IMAGE=$(awk '/image: localhost\/edgefleet\/versitygw/ { print $2 }' examples/kind/origin.yaml)
HOST=www.example.test
TIMEOUT=300s

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs `kubectl port-forward ARGS... :PORT` in the background, sets FORWARD_PID and sets
# FORWARD_PORT to the local port it picked, once it listens.
port_forward() {
  local log
  log=$(mktemp)
  kubectl port-forward "$@" >"$log" 2>&1 &
  FORWARD_PID=$!
  local deadline=$((SECONDS + 60))
  until FORWARD_PORT=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$log") &&
    [[ -n $FORWARD_PORT ]]; do
    kill -0 "$FORWARD_PID" 2>/dev/null || die "kubectl port-forward $*: $(cat "$log")"
    ((SECONDS < deadline)) || die "kubectl port-forward $* did not start: $(cat "$log")"
    sleep 0.2
  done
  rm -f "$log"
}

stop_port_forward() { kill "$FORWARD_PID" 2>/dev/null || true; wait "$FORWARD_PID" 2>/dev/null || true; }

case ${IMAGES:-docker} in
  docker)
    step "docker build: the operator, the edge and the origin"
    docker build -f operator/Dockerfile -t "$OPERATOR_IMAGE" .
    docker build -f edge/Dockerfile -t "$EDGE_IMAGE" .
    docker build -f examples/kind/origin.Dockerfile -t "$ORIGIN_IMAGE" .
    step "kind load docker-image (the images are not in any registry)"
    kind load docker-image --name "${KIND_CLUSTER:-kind}" "$OPERATOR_IMAGE" "$EDGE_IMAGE" "$ORIGIN_IMAGE"
    ;;
  loaded) step "images: $OPERATOR_IMAGE, $EDGE_IMAGE and $ORIGIN_IMAGE are on the nodes already" ;;
  *) die "IMAGES must be docker or loaded, not '$IMAGES'" ;;
esac

step "helm install edgefleet charts/edgefleet -n edgefleet-system"
helm upgrade --install edgefleet charts/edgefleet -n edgefleet-system --create-namespace \
  --wait --timeout "$TIMEOUT"
kubectl -n edgefleet-system get deploy,pods -o wide

step "the origin: kubectl apply -f examples/kind/origin.yaml"
kubectl apply -f examples/kind/origin.yaml
kubectl -n storage rollout status deploy/s3 --timeout "$TIMEOUT"

step "upload examples/site to bucket 'site' (aws s3 cp through kubectl port-forward)"
AWS_ACCESS_KEY_ID=$(kubectl -n storage get secret s3-root -o jsonpath='{.data.ROOT_ACCESS_KEY}' | base64 -d)
AWS_SECRET_ACCESS_KEY=$(kubectl -n storage get secret s3-root -o jsonpath='{.data.ROOT_SECRET_KEY}' | base64 -d)
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION=us-east-1 AWS_PAGER=""
port_forward -n storage svc/s3 :7070
trap stop_port_forward EXIT
s3() { aws --endpoint-url "http://127.0.0.1:$FORWARD_PORT" "$@"; }
s3 s3api head-bucket --bucket site 2>/dev/null || s3 s3api create-bucket --bucket site >/dev/null
s3 s3 cp --recursive --only-show-errors examples/site s3://site/
s3 s3 ls --recursive s3://site/
stop_port_forward

step "kubectl apply -f examples/origin-credentials.yaml -f examples/distribution.yaml"
kubectl apply -f examples/origin-credentials.yaml -f examples/distribution.yaml
kubectl wait distribution/site --for=condition=Ready --timeout "$TIMEOUT" ||
  { kubectl get distribution site -o yaml; kubectl get pods -o wide; exit 1; }
kubectl get distributions

step "GET / twice through an edge (kubectl port-forward)"
selector=(-l edgefleet.io/distribution=site --field-selector status.phase=Running)
[[ -z ${EDGE_NODE:-} ]] || selector[-1]+=",spec.nodeName=$EDGE_NODE"
edge=$(kubectl get pods "${selector[@]}" -o jsonpath='{.items[0].metadata.name}')
[[ -n $edge ]] || die "no running edge pod${EDGE_NODE:+ on $EDGE_NODE}"
port_forward "pod/$edge" :8080
for attempt in 1 2; do
  curl -sS -o /dev/null -H "Host: $HOST" \
    -w "request $attempt via $edge: %{http_code}  X-Cache: %header{x-cache}  X-Edge-Location: %header{x-edge-location}\n" \
    "http://127.0.0.1:$FORWARD_PORT/"
done
