# Real nodes for cluster.sh (sourced by it; not run on its own).
#
# A real node is a network namespace with its own link to the host, running containerd (with
# runc and the CNI bridge plugin), a kubelet and kube-proxy, all built from their Go modules by
# tools.sh. It joins the control plane like any node (a client certificate for
# system:node:<name>), carries the same region and zone labels as the simulated node it stands in
# for, runs pods as containers from images imported into its containerd, and routes ClusterIP
# traffic with kube-proxy (nftables). Its own namespace keeps kube-proxy's rules, the kubelet's
# ports and the pods' bridge off the host's network; its processes live in a cgroup of their
# own, so that everything it started (shims and containers too) is found and stopped on teardown.
#
# Addresses (inside the cluster's /18 slot, see claim_address_slot):
#   198.S.(T+49).0/24   the link network: the host's bridge is .1 (HOST_IP: the API server and
#                       cluster DNS listen there), real node i is .(10+i)
#   198.S.(T+56+i).0/24 real node i's pods (routes on the host and on the other real nodes send
#                       them to the node)
#
# Shared with cluster.sh: DIR, PKI, SLOT, SLOT_PREFIX, SLOT_THIRD, SLOT_CIDR, HOST_IP,
# HOST_BRIDGE, REAL_ZONES, IMAGES_DIR, EDGEFLEET_CNI_BIN_DIR, start_component, wait_until, kctl,
# gen_cert, write_kubeconfig, log, die.

# The pause image every pod sandbox starts from (built by images.sh, imported into each node).
PAUSE_IMAGE=localhost/edgefleet/pause:3.10.1
REAL_NODE_PREFIX=real-
# The label (value "true") every real node's kubelet registers it with.
REAL_NODE_LABEL=edgefleet.io/real-node
# Pod ranges 198.S.(T+56).0/24 to 198.S.(T+63).0/24: eight nodes per cluster at most.
MAX_REAL_NODES=8

real_node_name() { echo "$REAL_NODE_PREFIX$1"; }
real_node_dir() { echo "$DIR/nodes/$1"; }
real_node_netns() { echo "edgefleet$SLOT-$1"; }
real_node_ip() { echo "$SLOT_PREFIX.$((SLOT_THIRD + 49)).$((10 + $1))"; }
real_node_pod_cidr() { echo "$SLOT_PREFIX.$((SLOT_THIRD + 56 + $1)).0/24"; }
# Every process of the cluster's real nodes lives under this cgroup (in each v1 hierarchy).
real_nodes_cgroup() { echo "edgefleet-$SLOT"; }
host_bridge() { echo "ef${SLOT}br"; }

# Checks, before anything starts, that this machine can run a real node, installing the Debian
# packages it lacks (kube-proxy drives nftables through `nft`; the CNI plugins and the kubelet
# call `iptables`); says what is missing otherwise.
real_nodes_preflight() {
  [[ $(id -u) == 0 ]] || die "real nodes need root (network namespaces, cgroups, mounts)"
  local missing=() tool
  for tool in nsenter:util-linux findmnt:util-linux ip:iproute2 nft:nftables iptables:iptables; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
  done
  if ((${#missing[@]} > 0)); then
    command -v apt-get >/dev/null ||
      die "real nodes need these packages, and there is no apt-get to install them: ${missing[*]}"
    log "installing what a real node needs: apt-get install ${missing[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >&2 ||
      die "could not install ${missing[*]}"
  fi
  [[ -d /sys/fs/cgroup/pids ]] || die "real nodes need the cgroup v1 pids hierarchy at /sys/fs/cgroup/pids"
  [[ -f $IMAGES_DIR/pause.tar ]] ||
    die "no pause image in ${IMAGES_DIR:-<unset>} (--images DIR, built by tests/cluster/images.sh)"
}

# The host's side: a bridge holding HOST_IP that every node's link joins. Called for every
# cluster that can have it (root), so the API server can always listen on HOST_IP.
host_network_up() {
  local bridge
  bridge=$(host_bridge)
  ip link del "$bridge" 2>/dev/null || true
  ip link add "$bridge" type bridge || return 1
  ip addr add "$HOST_IP/24" dev "$bridge"
  ip link set "$bridge" up
  HOST_BRIDGE=$bridge
}

host_network_down() {
  [[ -n ${HOST_BRIDGE:-} ]] || return 0
  ip link del "$HOST_BRIDGE" 2>/dev/null || true
}

# The certificates the real nodes' components present to the API server, and the one the API
# server presents to kubelets (for logs, exec and port-forward).
real_nodes_pki() {
  local client="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth" zone
  gen_cert kube-proxy "/CN=system:kube-proxy" "$client"
  gen_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
  for zone in "${REAL_ZONES[@]}"; do
    gen_cert "kubelet-$zone" "/O=system:nodes/CN=system:node:$(real_node_name "$zone")" "$client"
  done
}

# Cluster DNS for pods on real nodes: CoreDNS on the host at HOST_IP:53, answering
# <service>.<namespace>.svc.cluster.local from the API server (and nothing outside the cluster:
# this machine has no upstream resolver to forward to).
start_cluster_dns() {
  cat >"$DIR/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 {
    bind $HOST_IP
    errors
    kubernetes cluster.local in-addr.arpa {
        kubeconfig $DIR/kubeconfig edgefleet-local
        pods insecure
    }
    cache 5
}
.:53 {
    bind $HOST_IP
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF
  log "starting cluster DNS (CoreDNS) on $HOST_IP:53"
  start_component coredns coredns -conf "$DIR/Corefile"
}

# Makes node i's network namespace, its link to the host bridge and the route to its pods.
real_node_network() {
  local i=$1 zone=$2 netns veth node_ip
  netns=$(real_node_netns "$zone")
  node_ip=$(real_node_ip "$i")
  veth=ef${SLOT}n$i
  ip netns del "$netns" 2>/dev/null || true
  ip netns add "$netns"
  ip link add "$veth" type veth peer name eth0 netns "$netns"
  ip link set "$veth" master "$HOST_BRIDGE" up
  ip -n "$netns" link set lo up
  ip -n "$netns" addr add "$node_ip/24" dev eth0
  ip -n "$netns" link set eth0 up
  ip -n "$netns" route add default via "$HOST_IP"
  ip route replace "$(real_node_pod_cidr "$i")" via "$node_ip"
  # The other real nodes' pods directly over the link (host-gw), not through the host.
  local j
  for ((j = 0; j < ${#REAL_ZONES[@]}; j++)); do
    ((j == i)) || ip -n "$netns" route add "$(real_node_pod_cidr "$j")" via "$(real_node_ip "$j")"
  done
  # Inside the node: forward between pods and the link, and let kube-proxy see traffic that
  # crosses the pods' bridge (a Service answered by a pod on the same node).
  ip netns exec "$netns" sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
}

# Sets IN_NODE to the command prefix that runs a command of node ZONE: in its network namespace
# (nsenter keeps the host's mount namespace, which the kubelet and containerd must share: the
# kubelet mounts the volumes that containerd hands to containers) and in its cgroup, where
# teardown finds it and everything it started.
in_real_node() {
  local zone=$1 cgroup
  cgroup=/sys/fs/cgroup/pids/$(real_nodes_cgroup)/$zone-daemons
  mkdir -p "$cgroup"
  IN_NODE=(nsenter --net="/run/netns/$(real_node_netns "$zone")" --
    sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cgroup")
}

real_node_containerd_config() {
  local i=$1 zone=$2 dir=$3
  mkdir -p "$dir/cni/net.d" "$dir/cni/ipam" "$dir/cni/cache"
  cat >"$dir/cni/net.d/10-edgefleet.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "edgefleet-$SLOT-$zone",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$dir/cni/ipam",
        "ranges": [[{"subnet": "$(real_node_pod_cidr "$i")"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat >"$dir/containerd.toml" <<EOF
version = 3
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "$dir/containerd.sock"

[ttrpc]
  address = "$dir/containerd.sock.ttrpc"

[plugins.'io.containerd.internal.v1.opt']
  path = "$dir/containerd/opt"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"

[plugins.'io.containerd.cri.v1.runtime']
  # This VM lacks CAP_SYS_RESOURCE: runc could not lower a sandbox's oom_score_adj otherwise.
  restrict_oom_score_adj = true
  # Pod network namespaces under the node's own state directory, not the host's /run/netns.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$dir/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$EDGEFLEET_CNI_BIN_DIR"]
    conf_dir = "$dir/cni/net.d"
EOF
}

real_node_kubelet_config() {
  local i=$1 zone=$2 dir=$3
  printf 'nameserver %s\n' "$HOST_IP" >"$dir/resolv.conf"
  cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This VM mounts cgroup v1 controllers (with a cgroup2 mount beside them).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$(real_nodes_cgroup)/$zone
containerRuntimeEndpoint: unix://$dir/containerd.sock
address: $(real_node_ip "$i")
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$HOST_IP]
clusterDomain: cluster.local
resolvConf: $dir/resolv.conf
podLogsDir: $dir/pod-logs
failSwapOn: false
# The machine's disk is shared with everything else: evict only when it is really full.
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2%}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
serializeImagePulls: false
EOF
}

# Starts node i (zone ZONE): network, containerd, the images, kubelet, kube-proxy.
start_real_node() {
  local i=$1 zone=$2 name dir
  name=$(real_node_name "$zone")
  dir=$(real_node_dir "$zone")
  mkdir -p "$dir"
  local region=${zone%-*}
  real_node_network "$i" "$zone"
  real_node_containerd_config "$i" "$zone" "$dir"
  real_node_kubelet_config "$i" "$zone" "$dir"
  write_kubeconfig "$dir/kubelet.kubeconfig" "system:node:$name" "kubelet-$zone"
  write_kubeconfig "$dir/kube-proxy.kubeconfig" system:kube-proxy kube-proxy
  local cgroup_root=$(real_nodes_cgroup)/$zone hierarchy
  # The kubelet wants its cgroup root to exist in every hierarchy it manages.
  for hierarchy in /sys/fs/cgroup/*/; do
    [[ -f $hierarchy/cgroup.procs ]] && mkdir -p "$hierarchy$cgroup_root"
  done

  log "starting real node $name ($region/$zone, $(real_node_ip "$i"), pods $(real_node_pod_cidr "$i"))"
  in_real_node "$zone"
  start_component "containerd-$zone" "${IN_NODE[@]}" containerd --config "$dir/containerd.toml"
  wait_until "containerd of $name" "containerd-$zone" -- ctr --address "$dir/containerd.sock" version
  local image
  for image in "$IMAGES_DIR"/*.tar; do
    ctr --address "$dir/containerd.sock" -n k8s.io images import "$image" >/dev/null ||
      die "could not import $image into $name's containerd"
  done
  start_component "kubelet-$zone" "${IN_NODE[@]}" kubelet \
    --config="$dir/kubelet.yaml" --kubeconfig="$dir/kubelet.kubeconfig" \
    --root-dir="$dir/kubelet" --cert-dir="$dir/kubelet-pki" \
    --hostname-override="$name" --node-ip="$(real_node_ip "$i")" \
    --node-labels="topology.kubernetes.io/region=$region,topology.kubernetes.io/zone=$zone,$REAL_NODE_LABEL=true" \
    --v=1
  start_component "kube-proxy-$zone" "${IN_NODE[@]}" kube-proxy \
    --kubeconfig="$dir/kube-proxy.kubeconfig" --hostname-override="$name" \
    --proxy-mode=nftables --cluster-cidr="$SLOT_CIDR" \
    --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256 \
    --conntrack-max-per-core=0 --v=1
  REAL_NODE_COMPONENTS+=("containerd-$zone" "kubelet-$zone" "kube-proxy-$zone")
  # For the test harness (tests/src/cluster.rs): where to reach this node's processes.
  echo "$name $zone $(real_node_netns "$zone") $dir/containerd.sock" >>"$DIR/real-nodes"
}

real_node_ready() {
  [[ $(kctl get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

# Stops whatever the real nodes of this slot left behind once their daemons are gone: containers
# and shims (found through the nodes' cgroup), mounts under DIR, cgroups, namespaces, routes.
real_nodes_teardown() {
  # Best effort: every step runs whatever the one before it found (or failed on).
  local -
  set +e
  local cgroup pass pid
  cgroup=/sys/fs/cgroup/pids/$(real_nodes_cgroup)
  if [[ -d $cgroup ]]; then
    for pass in 1 2 3 4 5; do
      local pids
      pids=$(find "$cgroup" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
      [[ -n $pids ]] || break
      for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
      sleep 0.2
    done
  fi
  # Deepest first: the pods' volumes and rootfs mounts, then their parents.
  findmnt -rn -o TARGET | grep -F "$DIR/nodes/" | sort -r | while read -r mount; do
    umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || true
  done
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/; do
    [[ -d $hierarchy$(real_nodes_cgroup) ]] || continue
    find "$hierarchy$(real_nodes_cgroup)" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  local netns
  for netns in $(ip netns list | awk '{ print $1 }' | grep "^$(real_node_netns "")"); do
    ip netns del "$netns" 2>/dev/null || true
  done
  local i
  for ((i = 0; i < MAX_REAL_NODES; i++)); do
    ip route del "$(real_node_pod_cidr "$i")" 2>/dev/null || true
  done
}
