#!/usr/bin/env bash
# A local, secure, RBAC-enabled Kubernetes control plane with simulated (KWOK) nodes.
#
#   cluster.sh up --dir DIR [--watch-pid PID] [--timeout SECONDS] [--remove-dir]
#                 [--external-pods KEY=VALUE] [--real-nodes ZONE[,ZONE...] --images DIR]
#       Starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on free
#       ports of the cluster's host address (127.0.0.1 without root), creates the simulated
#       nodes, writes DIR/kubeconfig (admin),
#       DIR/env (source it) and, once everything is ready, DIR/ready. Stays in the foreground and
#       tears everything down on exit, on SIGINT/SIGTERM, when a component dies, and when the
#       process PID (--watch-pid) is gone. --timeout bounds the start-up once the tools are
#       built (default 180 s); --remove-dir deletes DIR after a clean stop (kept after failures).
#       --external-pods: pods with this label get an IP and phase Pending from kwok but are never
#       started or marked Ready by it; an external runner (tests/src/pods) runs them for real.
#       --real-nodes: a real node (containerd, kubelet, kube-proxy; see real-node.sh) takes the
#       place of the simulated nodes of each ZONE (e.g. eu-west-a), with the images (*.tar, made
#       by images.sh, pause.tar among them) of --images imported into its containerd.
#   cluster.sh down --dir DIR
#       Stops the cluster running in DIR and waits until it is gone.
#
# Tools come from tools.sh (built and cached on first use).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=real-node.sh
source "$HERE/real-node.sh"

# Simulated topology: every region has zones <region>-a and <region>-b, two nodes per zone.
REGIONS=(eu-west us-east ap-south)
ZONE_SUFFIXES=(a b)
NODES_PER_ZONE=2

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# ---------------------------------------------------------------------------------------------
# Processes

declare -A PIDS=()
ORDER=()
# Children die with this script even if it is SIGKILLed (parent-death signal), when possible.
PDEATH=()
if setpriv --help 2>/dev/null | grep -q -- --pdeathsig; then PDEATH=(setpriv --pdeathsig SIGKILL --); fi

start_component() {
  local name=$1
  shift
  # The address-slot lock stays with this script: a component must not keep it alive.
  "${PDEATH[@]}" "$@" >"$DIR/logs/$name.log" 2>&1 {SLOT_LOCK}>&- &
  PIDS[$name]=$!
  ORDER+=("$name")
}

# True while PID runs; an exited child that bash has not reaped yet (a zombie) does not count.
running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

alive() { running "${PIDS[$1]}"; }

# Fails with the component's log tail if it has exited.
check_alive() {
  local name
  for name in "$@"; do
    if ! alive "$name"; then
      tail -n 30 "$DIR/logs/$name.log" >&2 || true
      die "$name exited unexpectedly (log: $DIR/logs/$name.log)"
    fi
  done
}

teardown() {
  local rc=$?
  trap - EXIT INT TERM
  # Everything below is best effort: a step that fails must not keep the next from running.
  set +e
  rm -f "$DIR/ready"
  # Stop in reverse start order, each given a few seconds to exit cleanly: clients first, so the
  # apiserver and etcd have no open watches left to drain.
  local i name pid deadline
  for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do
    name=${ORDER[i]}
    pid=${PIDS[$name]}
    kill -TERM "$pid" 2>/dev/null || continue
    deadline=$((SECONDS + 5))
    while running "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
    if running "$pid"; then
      log "killing $name: it ignored SIGTERM for 5s"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  if ((${#REAL_ZONES[@]} > 0)); then real_nodes_teardown; fi
  host_network_down
  rm -rf "$DIR/etcd-data"
  remove_local_route
  rm -f "$DIR/pid"
  # A requested stop removes the directory when asked to; a failure keeps it for its logs.
  if [[ $REMOVE_DIR == 1 ]] && { ((rc == 0)) || [[ $STOPPING == 1 ]]; }; then
    rm -rf "$DIR"
    log "stopped"
  elif ((${#ORDER[@]} > 0)); then
    log "stopped (logs kept in $DIR/logs)"
  fi
  exit "$rc"
}

# ---------------------------------------------------------------------------------------------
# Ports: random in 20000-31999 (below the kernel's ephemeral range), not listened on, unique.

declare -A TAKEN_PORTS=()
free_port() {
  local var=$1 p _
  for _ in $(seq 500); do
    p=$((20000 + RANDOM % 12000))
    [[ -z ${TAKEN_PORTS[$p]:-} ]] || continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      TAKEN_PORTS[$p]=1
      printf -v "$var" '%s' "$p"
      return 0
    fi
  done
  die "no free port found"
}

# ---------------------------------------------------------------------------------------------
# Addresses. Pod and Service IPs come from 198.18.0.0/15 (RFC 2544: reserved for benchmarking,
# never a real network), which the apiserver accepts in EndpointSlices (it refuses 127/8). The
# range is cut into 8 slots of /18, one per running cluster, claimed with a lock held for the
# cluster's lifetime: simulated pods get the first /19 (8190 IPs), Services the next /20 (4094),
# simulated nodes 198.x.y.48.0/24, and real nodes the rest (real-node.sh: their link network and
# pod ranges). `local` routes on lo for the simulated pods, the Services and the simulated nodes
# make those addresses local, so a real process (tests/src/pods) can listen on its pod IP and the
# harness on a Service's ClusterIP; real nodes' addresses are routed to the nodes.

claim_address_slot() {
  local lock_dir=${XDG_RUNTIME_DIR:-/tmp} slot
  for ((slot = 0; slot < 8; slot++)); do
    exec {SLOT_LOCK}>"$lock_dir/edgefleet-cluster-net-$slot.lock"
    if flock -n "$SLOT_LOCK"; then
      SLOT=$slot
      SLOT_PREFIX=198.$((18 + slot / 4))
      SLOT_THIRD=$(((slot % 4) * 64))
      SLOT_CIDR=$SLOT_PREFIX.$SLOT_THIRD.0/18
      POD_CIDR=$SLOT_PREFIX.$SLOT_THIRD.0/19
      SERVICE_CIDR=$SLOT_PREFIX.$((SLOT_THIRD + 32)).0/20
      KUBERNETES_SERVICE_IP=$SLOT_PREFIX.$((SLOT_THIRD + 32)).1
      NODE_IP_PREFIX=$SLOT_PREFIX.$((SLOT_THIRD + 48))
      LOCAL_CIDRS=("$POD_CIDR" "$SERVICE_CIDR" "$NODE_IP_PREFIX.0/24")
      clean_up_after_previous_holder "$lock_dir/edgefleet-cluster-net-$slot.dir"
      add_local_route
      return
    fi
    exec {SLOT_LOCK}>&-
  done
  die "all 8 address slots are taken: 8 local clusters are running already"
}

# A cluster killed with SIGKILL cannot tear its real nodes down (their containers outlive it):
# the next cluster to claim the slot does, with the directory the killed one recorded.
clean_up_after_previous_holder() {
  local record=$1 previous
  previous=$(cat "$record" 2>/dev/null || true)
  if [[ -n $previous ]]; then
    log "cleaning up after the cluster that held address slot $SLOT before ($previous)"
    local saved_dir=$DIR
    DIR=$previous
    real_nodes_teardown
    DIR=$saved_dir
  fi
  echo "$DIR" >"$record"
  SLOT_RECORD=$record
}

add_local_route() {
  local cidr
  for cidr in "${LOCAL_CIDRS[@]}"; do
    if ! ip route replace local "$cidr" dev lo 2>/dev/null; then
      log "warning: cannot add a local route for $cidr (needs CAP_NET_ADMIN): pod IPs are" \
        "not local addresses, so real processes cannot listen on them"
      return
    fi
  done
  LOCAL_ROUTE=1
  # The cluster's own address, where the API server listens: on a host bridge that real nodes
  # can join. Without one (no CAP_NET_ADMIN) the cluster lives on 127.0.0.1 and has no real nodes.
  HOST_IP=$SLOT_PREFIX.$((SLOT_THIRD + 49)).1
  host_network_up || HOST_IP=127.0.0.1
}

remove_local_route() {
  if [[ ${LOCAL_ROUTE:-0} == 1 ]]; then
    local cidr
    for cidr in "${LOCAL_CIDRS[@]}"; do ip route del local "$cidr" dev lo 2>/dev/null || true; done
  fi
  [[ -z ${SLOT_RECORD:-} ]] || rm -f "$SLOT_RECORD"
}

# ---------------------------------------------------------------------------------------------
# Certificates: a CA, the apiserver's serving cert, one client cert per identity, the SA key.

gen_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

gen_ca() {
  gen_key "$PKI/ca.key"
  openssl req -x509 -new -key "$PKI/ca.key" -out "$PKI/ca.crt" -days 3650 \
    -subj "/CN=edgefleet-local-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}

# gen_cert NAME SUBJECT EXTENSIONS
gen_cert() {
  local name=$1 subj=$2 ext=$3
  gen_key "$PKI/$name.key"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -set_serial "0x$(openssl rand -hex 12)" -days 365 -extfile "$PKI/$name.ext" \
    -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

gen_pki() {
  mkdir -p "$PKI"
  gen_ca
  gen_cert apiserver "/CN=kube-apiserver" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$HOST_IP,IP:$KUBERNETES_SERVICE_IP"
  local client="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  gen_cert admin "/O=system:masters/CN=edgefleet-admin" "$client"
  gen_cert controller-manager "/CN=system:kube-controller-manager" "$client"
  gen_cert scheduler "/CN=system:kube-scheduler" "$client"
  # Service-account tokens are signed with RSA, as on real clusters.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
}

# write_kubeconfig FILE USER CERT_NAME: credentials are embedded so the file stands alone.
write_kubeconfig() {
  local file=$1 user=$2 cert=$3
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: edgefleet-local
  cluster:
    server: https://$HOST_IP:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$cert.crt")
    client-key-data: $(base64 -w0 <"$PKI/$cert.key")
contexts:
- name: edgefleet-local
  context:
    cluster: edgefleet-local
    user: $user
    namespace: default
current-context: edgefleet-local
EOF
  chmod 600 "$file"
}

# ---------------------------------------------------------------------------------------------
# Waiting

# wait_until WHAT COMPONENT... -- COMMAND...: polls COMMAND until it succeeds or the deadline
# passes, failing early if one of the components it depends on has died.
wait_until() {
  local what=$1
  shift
  local components=()
  while [[ $1 != -- ]]; do
    components+=("$1")
    shift
  done
  shift
  while ! "$@" >/dev/null 2>&1; do
    check_alive "${components[@]}"
    ((SECONDS < DEADLINE)) || die "timed out waiting for $what (logs: $DIR/logs)"
    sleep 0.2
  done
}

api_get() {
  curl -sf --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://$HOST_IP:$APISERVER_PORT$1"
}

kctl() { kubectl --kubeconfig "$DIR/kubeconfig" "$@"; }

nodes_ready() {
  local ready
  ready=$(kctl get nodes -l edgefleet.io/simulated=true \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
    grep -c '^True$' || true)
  ((ready == NODE_COUNT))
}

# ---------------------------------------------------------------------------------------------
# KWOK stages: the stock "fast" ones from the kwok module, plus, with --external-pods, a stage of
# our own for the pods an external runner runs (the stock stages are told to leave them alone).

write_stages() {
  local src=$EDGEFLEET_KWOK_STAGES dest=$DIR/stages
  rm -rf "$dest"
  mkdir -p "$dest"
  cp "$src/node/fast/node-initialize.yaml" "$src/pod/fast/pod-complete.yaml" "$dest/"
  if [[ -z $EXTERNAL_PODS ]]; then
    cp "$src/pod/fast/pod-ready.yaml" "$src/pod/fast/pod-delete.yaml" "$dest/"
    return
  fi
  local key=${EXTERNAL_PODS%%=*} value=${EXTERNAL_PODS#*=}
  # pod-ready must skip external pods: only their runner may say they are ready. pod-delete
  # still applies to them, so a deleted pod goes away at once as with any simulated pod.
  cp "$src/pod/fast/pod-delete.yaml" "$dest/"
  awk -v key="$key" -v value="$value" '
    { print }
    /^    matchExpressions:$/ && !done {
      printf "    - key: %c.metadata.labels[\"%s\"]%c\n", 39, key, 39
      print "      operator: NotIn"
      printf "      values: [\"%s\"]\n", value
      done = 1
    }' "$src/pod/fast/pod-ready.yaml" >"$dest/pod-ready.yaml"
  grep -q "labels\[\"$key\"\]" "$dest/pod-ready.yaml" ||
    die "could not add the external-pods exclusion to kwok's pod-ready stage"
  sed -e "s|__KEY__|$key|g" -e "s|__VALUE__|$value|g" \
    "$HERE/stages/pod-external.yaml" >"$dest/pod-external.yaml"
}

# ---------------------------------------------------------------------------------------------
# Nodes

is_real_zone() {
  local zone
  for zone in "${REAL_ZONES[@]}"; do [[ $zone == "$1" ]] && return 0; done
  return 1
}

# The zones of the simulated topology, one per line.
all_zones() {
  local region suffix
  for region in "${REGIONS[@]}"; do
    for suffix in "${ZONE_SUFFIXES[@]}"; do echo "$region-$suffix"; done
  done
}

node_manifests() {
  local region suffix zone n name i=0
  for region in "${REGIONS[@]}"; do
    for suffix in "${ZONE_SUFFIXES[@]}"; do
      zone=$region-$suffix
      is_real_zone "$zone" && continue
      for ((n = 0; n < NODES_PER_ZONE; n++)); do
        name=kwok-$zone-$n
        i=$((i + 1))
        cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: $name
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node.kubernetes.io/instance-type: kwok
    topology.kubernetes.io/region: $region
    topology.kubernetes.io/zone: $zone
    edgefleet.io/simulated: "true"
spec: {}
status:
  addresses:
  - type: InternalIP
    address: $NODE_IP_PREFIX.$i
  - type: Hostname
    address: $name
  allocatable: {cpu: "64", memory: 256Gi, pods: "1000"}
  capacity: {cpu: "64", memory: 256Gi, pods: "1000"}
EOF
      done
    done
  done
}

# kwok v0.8.0 creates its pod-IP pool on first use without a lock: pods handled concurrently
# before the pool exists can each create one and get the same IP. One pod handled alone first
# creates the pool; deleting it gives its IP back.
warm_up_pod_ip_pool() {
  local first_node
  first_node=$(kctl get nodes -l edgefleet.io/simulated=true -o jsonpath='{.items[0].metadata.name}')
  kctl create -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: kwok-pod-ip-pool-warm-up
  namespace: default
spec:
  nodeName: $first_node
  automountServiceAccountToken: false
  containers:
  - name: warm-up
    image: registry.k8s.io/pause:3.10
EOF
  wait_until "kwok to assign a pod IP" "$@" -- pod_has_ip default kwok-pod-ip-pool-warm-up
  kctl delete pod -n default kwok-pod-ip-pool-warm-up --wait=false >/dev/null
}

pod_has_ip() {
  [[ -n $(kctl get pod -n "$1" "$2" -o jsonpath='{.status.podIP}') ]]
}

# ---------------------------------------------------------------------------------------------
# up

CONTROLLERS=(
  # Workloads and what the operator creates.
  deployment replicaset statefulset daemonset job cronjob ttl-after-finished disruption
  endpointslice endpointslice-mirroring endpoints
  # Namespaces (tests isolate by namespace), garbage collection through ownerReferences.
  namespace garbage-collector pod-garbage-collector resourcequota
  # Service accounts, their tokens, the root CA ConfigMap every pod mounts, aggregated roles.
  serviceaccount serviceaccount-token root-ca-certificate-publisher clusterrole-aggregation
  # Deliberately absent: node-lifecycle and taint-eviction (they would evict pods from simulated
  # nodes that send no heartbeats), and everything about volumes, clouds and node IPAM.
)

# The scheduler's client limits are well above the defaults (50 QPS): with thousands of
# simulated pods the scheduler, not what is under test, would set the pace. With real nodes it
# also prefers them for every pod that may run there (an added node affinity, weighted above the
# spreading and resource scores), so a pod lands on a simulated node, which runs nothing but the
# edges the pod runner starts, only where no real node fits: the operator's pod, an origin, any
# workload a test or an example adds runs for real.
write_scheduler_config() {
  cat >"$DIR/scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $DIR/scheduler.kubeconfig
  qps: 500
  burst: 1000
leaderElection:
  leaderElect: false
EOF
  ((${#REAL_ZONES[@]} > 0)) || return 0
  cat >>"$DIR/scheduler.yaml" <<EOF
profiles:
- schedulerName: default-scheduler
  plugins:
    score:
      enabled:
      - name: NodeAffinity
        weight: 100
  pluginConfig:
  - name: NodeAffinity
    args:
      addedAffinity:
        preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          preference:
            matchExpressions:
            - {key: $REAL_NODE_LABEL, operator: In, values: ["true"]}
EOF
}

cmd_up() {
  [[ -z ${WATCH_PID:-} ]] || kill -0 "$WATCH_PID" 2>/dev/null || die "--watch-pid $WATCH_PID is not running"
  mkdir -p "$DIR/logs"
  DIR=$(cd "$DIR" && pwd)
  if [[ -f $DIR/pid ]] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then
    die "a cluster is already running in $DIR (pid $(cat "$DIR/pid")); use: $0 down --dir $DIR"
  fi
  rm -f "$DIR/ready" "$DIR/kubeconfig" "$DIR/env" "$DIR/real-nodes"
  echo $$ >"$DIR/pid"
  trap teardown EXIT
  trap 'STOPPING=1; exit 130' INT
  trap 'STOPPING=1; exit 143' TERM

  local env_lines
  env_lines=$("$HERE/tools.sh" --print-env)
  eval "$env_lines"
  # The deadline starts once the tools are there: a cold build takes many minutes.
  local started=$SECONDS
  DEADLINE=$((SECONDS + TIMEOUT))
  [[ -d $EDGEFLEET_KWOK_STAGES ]] || die "kwok stages missing in $EDGEFLEET_KWOK_STAGES"

  PKI=$DIR/pki
  rm -rf "$PKI" "$DIR/etcd-data"
  if ((${#REAL_ZONES[@]} > 0)); then real_nodes_preflight; fi
  claim_address_slot
  if ((${#REAL_ZONES[@]} > 0)) && [[ $HOST_IP == 127.0.0.1 ]]; then
    die "real nodes need a host bridge for their links, and none could be made"
  fi
  NODE_COUNT=$((($(all_zones | wc -l) - ${#REAL_ZONES[@]}) * NODES_PER_ZONE))

  gen_pki
  if ((${#REAL_ZONES[@]} > 0)); then real_nodes_pki; fi
  write_stages

  local etcd_port etcd_peer_port
  free_port etcd_port
  free_port etcd_peer_port
  free_port APISERVER_PORT

  log "starting etcd on 127.0.0.1:$etcd_port"
  start_component etcd etcd --name=edgefleet --data-dir="$DIR/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" \
    --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="edgefleet=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync=true --log-level=warn
  wait_until etcd etcd -- curl -sf --max-time 2 "http://127.0.0.1:$etcd_port/health"

  # TaintNodesByCondition would taint every new node not-ready until the node-lifecycle
  # controller lifts it, and that controller is left out (see CONTROLLERS). On a host address
  # the API server keeps the `kubernetes` Service's endpoints itself, so pods on real nodes reach
  # it through its ClusterIP; the apiserver refuses a loopback address in endpoints.
  local apiserver_extra=(--endpoint-reconciler-type=none)
  [[ $HOST_IP == 127.0.0.1 ]] || apiserver_extra=(--endpoint-reconciler-type=lease)
  if ((${#REAL_ZONES[@]} > 0)); then
    # Logs, exec and port-forward reach a kubelet at its node's address (node names resolve
    # nowhere), with a client certificate the kubelet's x509 authentication accepts.
    apiserver_extra+=(--kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt"
      --kubelet-client-key="$PKI/apiserver-kubelet-client.key"
      --kubelet-preferred-address-types=InternalIP)
  fi
  log "starting kube-apiserver on https://$HOST_IP:$APISERVER_PORT"
  start_component kube-apiserver kube-apiserver \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address="$HOST_IP" --advertise-address="$HOST_IP" --secure-port="$APISERVER_PORT" \
    --cert-dir="$PKI" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --disable-admission-plugins=TaintNodesByCondition \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    "${apiserver_extra[@]}" \
    --allow-privileged=true \
    --profiling=false \
    --v=1
  write_kubeconfig "$DIR/kubeconfig" edgefleet-admin admin
  write_kubeconfig "$DIR/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  write_kubeconfig "$DIR/scheduler.kubeconfig" system:kube-scheduler scheduler
  wait_until "kube-apiserver /readyz" kube-apiserver -- api_get /readyz

  log "creating $NODE_COUNT simulated nodes"
  node_manifests | kctl create -f - >/dev/null

  local controllers
  controllers=$(printf '%s-controller,' "${CONTROLLERS[@]}")
  controllers=${controllers%,}
  log "starting kube-controller-manager, kube-scheduler, kwok"
  # Client rate limits well above the defaults (20 QPS for the controllers, 50 for the
  # scheduler): with thousands of simulated pods they, not what is under test, set the pace.
  # For the same reason more workers than the default 5 for Deployments, ReplicaSets and
  # EndpointSlices: each sync waits on API round trips.
  start_component kube-controller-manager kube-controller-manager \
    --kubeconfig="$DIR/controller-manager.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port=0 \
    --kube-api-qps=500 --kube-api-burst=1000 \
    --concurrent-deployment-syncs=25 --concurrent-replicaset-syncs=25 \
    --concurrent-service-endpoint-syncs=25 \
    --controllers="$controllers" \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --cluster-cidr="$POD_CIDR" --service-cluster-ip-range="$SERVICE_CIDR" \
    --v=1
  write_scheduler_config
  start_component kube-scheduler kube-scheduler \
    --config="$DIR/scheduler.yaml" --bind-address=127.0.0.1 --secure-port=0 --v=1
  local stage kwok_configs=()
  for stage in "$DIR"/stages/*.yaml; do kwok_configs+=("--config=$stage"); done
  start_component kwok kwok \
    --kubeconfig="$DIR/kubeconfig" \
    "${kwok_configs[@]}" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr="$POD_CIDR" \
    --node-ip="$NODE_IP_PREFIX.254"

  {
    printf 'export KUBECONFIG=%q\n' "$DIR/kubeconfig"
    printf '%s\n' "$env_lines"
    printf 'export EDGEFLEET_POD_CIDR=%q\n' "$POD_CIDR"
    printf 'export EDGEFLEET_SERVICE_CIDR=%q\n' "$SERVICE_CIDR"
    printf 'export EDGEFLEET_EXTERNAL_PODS=%q\n' "$EXTERNAL_PODS"
    printf 'export EDGEFLEET_HOST_IP=%q\n' "$HOST_IP"
    printf 'export EDGEFLEET_REAL_NODES=%q\n' "$(IFS=,; echo "${REAL_ZONES[*]/#/$REAL_NODE_PREFIX}")"
  } >"$DIR/env"

  local all=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
  wait_until "$NODE_COUNT Ready nodes" "${all[@]}" -- nodes_ready
  wait_until "the default ServiceAccount" "${all[@]}" -- kctl get serviceaccount default -n default
  warm_up_pod_ip_pool "${all[@]}"

  if ((${#REAL_ZONES[@]} > 0)); then
    start_cluster_dns
    all+=(coredns)
    local i zone
    for ((i = 0; i < ${#REAL_ZONES[@]}; i++)); do start_real_node "$i" "${REAL_ZONES[i]}"; done
    all+=("${REAL_NODE_COMPONENTS[@]}")
    for zone in "${REAL_ZONES[@]}"; do
      wait_until "real node $(real_node_name "$zone") Ready" "${all[@]}" -- \
        real_node_ready "$(real_node_name "$zone")"
    done
  fi

  touch "$DIR/ready"
  log "ready in $((SECONDS - started))s: export KUBECONFIG=$DIR/kubeconfig (or: source $DIR/env)"

  while :; do
    check_alive "${all[@]}"
    if [[ -n ${WATCH_PID:-} ]] && ! kill -0 "$WATCH_PID" 2>/dev/null; then
      log "process $WATCH_PID is gone; stopping"
      exit 0
    fi
    # `wait` on a background sleep lets the INT/TERM traps run at once.
    sleep 1 &
    wait $! || true
  done
}

cmd_down() {
  [[ -f $DIR/pid ]] || { log "no cluster running in $DIR"; return 0; }
  local pid
  pid=$(cat "$DIR/pid")
  kill -TERM "$pid" 2>/dev/null || { rm -f "$DIR/pid"; return 0; }
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || die "cluster supervisor $pid did not stop within 30s"
    sleep 0.2
  done
  log "cluster in $DIR stopped"
}

main() {
  local cmd=${1:-}
  [[ -n $cmd ]] || usage
  shift
  DIR="" WATCH_PID="" TIMEOUT=180 REMOVE_DIR=0 STOPPING=0 EXTERNAL_PODS="" IMAGES_DIR=""
  REAL_ZONES=() REAL_NODE_COMPONENTS=()
  while (($#)); do
    case $1 in
      --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
      --watch-pid) WATCH_PID=${2:?--watch-pid needs a value}; shift 2 ;;
      --timeout) TIMEOUT=${2:?--timeout needs a value}; shift 2 ;;
      --remove-dir) REMOVE_DIR=1; shift ;;
      --external-pods) EXTERNAL_PODS=${2:?--external-pods needs KEY=VALUE}; shift 2 ;;
      --real-nodes) IFS=, read -r -a REAL_ZONES <<<"${2:?--real-nodes needs ZONE[,ZONE...]}"; shift 2 ;;
      --images) IMAGES_DIR=${2:?--images needs a directory}; shift 2 ;;
      -h | --help) usage ;;
      *) die "unknown argument $1" ;;
    esac
  done
  [[ -n $DIR ]] || die "--dir is required"
  if [[ -n $EXTERNAL_PODS && ! $EXTERNAL_PODS =~ ^[A-Za-z0-9./_-]+=[A-Za-z0-9._-]+$ ]]; then
    die "--external-pods takes one label as KEY=VALUE, not '$EXTERNAL_PODS'"
  fi
  local zone
  for zone in "${REAL_ZONES[@]}"; do
    all_zones | grep -qx "$zone" || die "--real-nodes: unknown zone '$zone' (zones: $(all_zones | tr '\n' ' '))"
  done
  ((${#REAL_ZONES[@]} <= MAX_REAL_NODES)) || die "--real-nodes: at most $MAX_REAL_NODES"
  case $cmd in
    up) cmd_up ;;
    down) cmd_down ;;
    *) usage ;;
  esac
}

main "$@"
