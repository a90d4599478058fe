#!/usr/bin/env bash
# A real, throwaway Kubernetes 1.20 control plane (etcd + kube-apiserver +
# kube-controller-manager, no kubelet) for ork's integration tests.
# Recipe and background: test-control-plane.md in the shared docs next to the repository.
#
# Usage:
#   scripts/control-plane.sh install      # root; apt packages (also chromium + chromedriver for
#                                         # the browser tests) + build binaries once (~5 min),
#                                         # then a no-op taking seconds
#   scripts/control-plane.sh start DIR    # start everything under DIR, wait until ready,
#                                         # print DIR/kubeconfig
#   scripts/control-plane.sh stop DIR     # stop the processes started by `start DIR`; keeps logs
#   scripts/control-plane.sh status DIR   # exit 0 and say "up" if running and ready, else exit 1
#
# After `start DIR`:  source DIR/env   (exports KUBECONFIG, ORK_TEST_APISERVER, ORK_TEST_CA_FILE,
#   ORK_TEST_ADMIN_TOKEN, ORK_TEST_USER_TOKEN/ORK_TEST_USER_NAME (a token with no RBAC
#   permissions of its own), ORK_TEST_CONTROL_PLANE_DIR).
# Layout of DIR: pki/ (CA, serving cert, SA keys, tokens.csv, audit-policy.yaml), etcd-data/,
# logs/*.log (audit.log: the requests of user ork-viewer),
#   run/*.pid, kubeconfig, env.
#
# Environment:
#   ORK_CACHE_DIR       cache root (default $HOME/.cache/ork); binaries go to
#                       $ORK_CACHE_DIR/kubernetes-1.20.2/bin/
#   ORK_START_TIMEOUT   seconds `start` waits for readiness (default 90)
#   ORK_STOP_TIMEOUT    seconds `stop` waits before SIGKILL (default 20)
set -euo pipefail

KUBE_VERSION=1.20.2
CACHE_ROOT="${ORK_CACHE_DIR:-${HOME:-/root}/.cache/ork}"
KUBE_CACHE="$CACHE_ROOT/kubernetes-$KUBE_VERSION"
BIN_DIR="$KUBE_CACHE/bin"
# chromium + chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): the headless browser
# the dashboard's end-to-end tests drive through WebDriver (tests/support/browser.rs).
APT_PACKAGES=(golang-go etcd-server rsync jq openssl golang-github-modern-go-reflect2-dev make curl
  chromium chromium-driver)
DEB_SRC_FILE=/etc/apt/sources.list.d/ork-bookworm-src.sources
COMPONENTS=(kube-controller-manager kube-apiserver etcd) # stop order; start order is reversed
# pvc-protection runs (unlike pv-protection): it lifts a claim's finalizer once no Pod uses it,
# so a claim deleted with its Run (a workspace's) is really gone, and so is its namespace.
KCM_CONTROLLERS='*,-nodeipam,-nodelifecycle,-service,-route,-cloud-node-lifecycle,-attachdetach,-persistentvolume-binder,-persistentvolume-expander,-pv-protection'

log() { printf '[control-plane] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------

missing_packages() {
  local p status
  for p in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || printf '%s\n' "$p"
  done
}

# Prints "URI KEYRING" of the existing Debian bookworm `deb` entry (deb822 or one-line format).
bookworm_mirror() {
  local f found=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    found=$(awk '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && suites ~ /(^| )bookworm( |$)/ && comps ~ /(^| )main( |$)/ && uri != "")
          { print uri, (key == "" ? "-" : key); exit }
        types = suites = comps = uri = key = ""
      }
      /^[ \t]*$/ { flush(); next }
      /^#/ { next }
      tolower($1) == "types:"      { sub(/^[^:]*:[ \t]*/, ""); types = $0 }
      tolower($1) == "suites:"     { sub(/^[^:]*:[ \t]*/, ""); suites = $0 }
      tolower($1) == "components:" { sub(/^[^:]*:[ \t]*/, ""); comps = $0 }
      tolower($1) == "uris:"       { uri = $2 }
      tolower($1) == "signed-by:"  { key = $2 }
      END { flush() }' "$f")
    [[ -n $found ]] && break
  done
  if [[ -z $found ]]; then
    found=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '$1 == "deb" {
             key = "-"; i = 2
             if ($2 ~ /^\[/) { for (; i <= NF; i++) { if ($i ~ /signed-by=/) { key = $i; sub(/.*signed-by=/, "", key); sub(/\]$/, "", key) } if ($i ~ /\]$/) break } i++ }
             if ($(i + 1) == "bookworm") { print $i, key; exit }
           }' || true)
  fi
  printf '%s\n' "${found:-http://deb.debian.org/debian /usr/share/keyrings/debian-archive-keyring.gpg}"
}

kubernetes_source_known() {
  [[ -n $(apt-cache showsrc kubernetes 2>/dev/null) ]]
}

ensure_deb_src() {
  kubernetes_source_known && return 0
  if [[ ! -f $DEB_SRC_FILE ]]; then
    local uri key
    read -r uri key < <(bookworm_mirror)
    log "adding deb-src entry for bookworm main ($uri) in $DEB_SRC_FILE"
    {
      echo "Types: deb-src"
      echo "URIs: $uri"
      echo "Suites: bookworm"
      echo "Components: main"
      [[ $key == "-" ]] || echo "Signed-By: $key"
    } >"$DEB_SRC_FILE"
  fi
  apt-get update -q >&2
  kubernetes_source_known || die "apt does not know the kubernetes source package even after adding $DEB_SRC_FILE"
}

build_kubernetes() {
  local scratch="$KUBE_CACHE/build"
  rm -rf "$scratch"
  mkdir -p "$scratch/home"
  log "downloading the kubernetes source package into $scratch"
  (cd "$scratch" && apt-get source --download-only kubernetes >&2)
  local orig
  orig=$(compgen -G "$scratch/kubernetes_*.orig.tar.gz" | head -n1) || true
  [[ -n $orig ]] || die "no kubernetes_*.orig.tar.gz was downloaded into $scratch"
  log "unpacking $(basename "$orig")"
  tar -C "$scratch" -xzf "$orig"
  local src="$scratch/kubernetes-$KUBE_VERSION"
  [[ -d $src ]] || die "$orig did not unpack to kubernetes-$KUBE_VERSION/"

  # Vendored reflect2 1.0.1 crashes the apiserver under Go >= 1.18; use Debian's 1.0.2.
  local fixed=/usr/share/gocode/src/github.com/modern-go/reflect2 vend="$src/vendor/github.com/modern-go/reflect2"
  [[ -d $fixed ]] || die "$fixed is missing (package golang-github-modern-go-reflect2-dev)"
  [[ -d $vend ]] || die "$vend is missing in the source tree"
  rm -f "$vend"/*.go "$vend"/*.s
  cp "$fixed"/*.go "$vend"/
  if compgen -G "$fixed/*.s" >/dev/null; then cp "$fixed"/*.s "$vend"/; fi

  log "building kube-apiserver and kube-controller-manager (several minutes; log: $scratch/build.log)"
  mkdir -p "$src/.go/src/k8s.io"
  ln -sfn ../../.. "$src/.go/src/k8s.io/kubernetes"
  if ! (cd "$src/.go/src/k8s.io/kubernetes" &&
    env GOPATH="$src/.go" CGO_ENABLED=0 HOME="$scratch/home" GOCACHE="$scratch/gocache" \
      GOFLAGS= GOPROXY=off \
      make WHAT="cmd/kube-apiserver cmd/kube-controller-manager") >"$scratch/build.log" 2>&1; then
    tail -n 40 "$scratch/build.log" >&2
    die "build failed; full log in $scratch/build.log (scratch dir kept)"
  fi

  local b out
  mkdir -p "$BIN_DIR"
  for b in kube-apiserver kube-controller-manager; do
    out="$src/_output/bin/$b"
    [[ -x $out ]] || out=$(find "$src/_output" -type f -name "$b" -perm -u+x | head -n1)
    [[ -n $out ]] || die "build produced no $b under $src/_output"
    cp "$out" "$BIN_DIR/.$b.tmp"
    mv -f "$BIN_DIR/.$b.tmp" "$BIN_DIR/$b"
  done
  log "binaries cached in $BIN_DIR; removing scratch dir $scratch"
  rm -rf "$scratch"
}

binaries_cached() {
  [[ -x $BIN_DIR/kube-apiserver && -x $BIN_DIR/kube-controller-manager ]]
}

cmd_install() {
  local missing
  missing=$(missing_packages)
  if [[ -n $missing ]]; then
    [[ $(id -u) -eq 0 ]] || die "need root to install packages: $(echo "$missing" | tr '\n' ' ')"
    log "installing apt packages: $(echo "$missing" | tr '\n' ' ')"
    apt-get update -q >&2
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >&2
  fi
  if binaries_cached; then
    log "kubernetes $KUBE_VERSION binaries already cached in $BIN_DIR"
    return 0
  fi
  mkdir -p "$KUBE_CACHE"
  # Serialise concurrent installs sharing a cache dir.
  exec 9>"$KUBE_CACHE/.lock"
  flock 9
  if binaries_cached; then
    log "kubernetes $KUBE_VERSION binaries already cached in $BIN_DIR"
    return 0
  fi
  [[ $(id -u) -eq 0 ]] || die "need root to add the deb-src entry"
  ensure_deb_src
  build_kubernetes
}

# ---------------------------------------------------------------------------
# start / stop / status
# ---------------------------------------------------------------------------

# Prints N distinct free TCP ports on 127.0.0.1.
free_ports() {
  local n=$1
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$n" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
  else
    local ports=() p used
    used=$(ss -Htan | awk '{print $4}' | sed 's/.*://' | sort -u)
    while ((${#ports[@]} < n)); do
      p=$((20000 + RANDOM % 30000))
      grep -qx "$p" <<<"$used" && continue
      [[ " ${ports[*]} " == *" $p "* ]] && continue
      ports+=("$p")
    done
    echo "${ports[*]}"
  fi
}

# True if the pid in DIR/run/NAME.pid is alive and is the process we started (its command line
# mentions DIR, so a recycled pid is not mistaken for ours).
component_pid() {
  local dir=$1 name=$2 pidfile="$1/run/$2.pid" pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/" || return 1
  # A zombie has exited.
  [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
  echo "$pid"
}

api_get() { # DIR PATH -> prints body, fails unless HTTP 2xx
  local dir=$1 path=$2 server token
  server=$(<"$dir/run/server")
  token=$(<"$dir/run/admin-token")
  curl -sf --max-time 5 --cacert "$dir/pki/ca.crt" -H "Authorization: Bearer $token" "$server$path"
}

gen_pki() {
  local pki=$1
  mkdir -p "$pki"
  (
    cd "$pki"
    umask 077
    openssl genrsa -out ca.key 2048 2>/dev/null
    openssl req -x509 -new -nodes -key ca.key -sha256 -days 3650 -subj "/CN=ork-test-ca" -out ca.crt 2>/dev/null
    openssl genrsa -out apiserver.key 2048 2>/dev/null
    openssl req -new -key apiserver.key -subj "/CN=kube-apiserver" -out apiserver.csr 2>/dev/null
    cat >apiserver.ext <<'EOF'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f apiserver.csr ca.srl
  )
}

write_kubeconfig() { # FILE SERVER CA TOKEN USER
  local ca_b64
  ca_b64=$(base64 -w0 <"$3")
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ork-test
  cluster:
    server: $2
    certificate-authority-data: $ca_b64
users:
- name: $5
  user:
    token: $4
contexts:
- name: ork-test
  context:
    cluster: ork-test
    user: $5
current-context: ork-test
EOF
  chmod 600 "$1"
}

launch() { # DIR NAME CMD... ; runs detached, logs to DIR/logs/NAME.log, pid in DIR/run/NAME.pid
  local dir=$1 name=$2
  shift 2
  setsid "$@" </dev/null >"$dir/logs/$name.log" 2>&1 &
  local pid=$! tries=0
  echo "$pid" >"$dir/run/$name.pid"
  # Until the child has exec'd, its command line is this script's: wait for the program's own
  # (which names DIR/), so a check right after this does not take a starting process for dead.
  while ((tries++ < 100)) && [[ -r /proc/$pid/cmdline ]] &&
    ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/"; do
    sleep 0.05
  done
}

start_failed() {
  local dir=$1 name
  log "error: $2"
  for name in etcd kube-apiserver kube-controller-manager; do
    [[ -f $dir/logs/$name.log ]] || continue
    log "---- last lines of $dir/logs/$name.log ----"
    tail -n 15 "$dir/logs/$name.log" >&2
  done
  cmd_stop "$dir" >/dev/null 2>&1 || true
  exit 1
}

cmd_start() {
  local dir=$1 name
  for b in kube-apiserver kube-controller-manager; do
    [[ -x $BIN_DIR/$b ]] || die "$BIN_DIR/$b is missing; run: $0 install"
  done
  command -v etcd >/dev/null || die "etcd is missing; run: $0 install"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)
  for name in "${COMPONENTS[@]}"; do
    if component_pid "$dir" "$name" >/dev/null; then
      die "$name from a previous 'start $dir' is still running; run: $0 stop $dir"
    fi
  done
  # Fresh state every time (only our own files inside DIR are touched).
  rm -rf "$dir/pki" "$dir/etcd-data" "$dir/logs" "$dir/run" "$dir/kcm-certs" "$dir/kubeconfig" "$dir/env"
  mkdir -p "$dir/logs" "$dir/run" "$dir/kcm-certs"
  chmod 700 "$dir/run"

  gen_pki "$dir/pki"
  local admin_token user_token viewer_token
  admin_token=$(openssl rand -hex 24)
  user_token=$(openssl rand -hex 24)
  viewer_token=$(openssl rand -hex 24)
  (
    umask 077
    {
      echo "$admin_token,ork-admin,ork-admin-uid,\"system:masters\""
      echo "$user_token,ork-test-user,ork-test-user-uid"
      echo "$viewer_token,ork-viewer,ork-viewer-uid"
    } >"$dir/pki/tokens.csv"
    echo "$admin_token" >"$dir/run/admin-token"
  )

  # Only the user `ork-viewer` is audited: the dashboard's tests read which of its requests
  # the API server refused (logs/audit.log, one JSON event per line).
  cat >"$dir/pki/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  users: ["ork-viewer"]
- level: None
EOF

  local etcd_port peer_port api_port kcm_port
  read -r etcd_port peer_port api_port kcm_port < <(free_ports 4)
  local server="https://127.0.0.1:$api_port"
  echo "$server" >"$dir/run/server"
  write_kubeconfig "$dir/kubeconfig" "$server" "$dir/pki/ca.crt" "$admin_token" ork-admin

  launch "$dir" etcd etcd \
    --name default \
    --data-dir "$dir/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port" \
    --initial-cluster-state new

  launch "$dir" kube-apiserver "$BIN_DIR/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 \
    --secure-port "$api_port" \
    --insecure-port 0 \
    --advertise-address 127.0.0.1 \
    --cert-dir "$dir/pki" \
    --tls-cert-file "$dir/pki/apiserver.crt" \
    --tls-private-key-file "$dir/pki/apiserver.key" \
    --client-ca-file "$dir/pki/ca.crt" \
    --token-auth-file "$dir/pki/tokens.csv" \
    --audit-policy-file "$dir/pki/audit-policy.yaml" \
    --audit-log-path "$dir/logs/audit.log" \
    --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$dir/pki/sa.pub" \
    --service-account-signing-key-file "$dir/pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --allow-privileged=true \
    --endpoint-reconciler-type none \
    --feature-gates TTLAfterFinished=true

  local timeout="${ORK_START_TIMEOUT:-90}" deadline
  deadline=$((SECONDS + timeout))
  until [[ $(api_get "$dir" /readyz 2>/dev/null) == ok ]]; do
    for name in etcd kube-apiserver; do
      component_pid "$dir" "$name" >/dev/null || start_failed "$dir" "$name exited during startup"
    done
    ((SECONDS < deadline)) || start_failed "$dir" "kube-apiserver not ready after ${timeout}s"
    sleep 0.2
  done

  launch "$dir" kube-controller-manager "$BIN_DIR/kube-controller-manager" \
    --kubeconfig "$dir/kubeconfig" \
    --bind-address 127.0.0.1 \
    --secure-port "$kcm_port" \
    --port 0 \
    --cert-dir "$dir/kcm-certs" \
    --service-account-private-key-file "$dir/pki/sa.key" \
    --root-ca-file "$dir/pki/ca.crt" \
    --leader-elect=false \
    --feature-gates TTLAfterFinished=true \
    --kube-api-qps 200 \
    --kube-api-burst 400 \
    --controllers "$KCM_CONTROLLERS"

  until api_get "$dir" /api/v1/namespaces/default/serviceaccounts/default >/dev/null 2>&1; do
    for name in "${COMPONENTS[@]}"; do
      component_pid "$dir" "$name" >/dev/null || start_failed "$dir" "$name exited during startup"
    done
    ((SECONDS < deadline)) ||
      start_failed "$dir" "default ServiceAccount not created within ${timeout}s"
    sleep 0.2
  done

  cat >"$dir/env" <<EOF
export KUBECONFIG='$dir/kubeconfig'
export ORK_TEST_CONTROL_PLANE_DIR='$dir'
export ORK_TEST_APISERVER='$server'
export ORK_TEST_CA_FILE='$dir/pki/ca.crt'
export ORK_TEST_ADMIN_TOKEN='$admin_token'
export ORK_TEST_USER_NAME='ork-test-user'
export ORK_TEST_USER_TOKEN='$user_token'
export ORK_TEST_VIEWER_NAME='ork-viewer'
export ORK_TEST_VIEWER_TOKEN='$viewer_token'
EOF
  chmod 600 "$dir/env"
  log "up: $server (etcd 127.0.0.1:$etcd_port, kube-controller-manager 127.0.0.1:$kcm_port)"
  echo "$dir/kubeconfig"
}

cmd_stop() {
  local dir=$1 name pid
  [[ -d $dir ]] || die "no such directory: $dir"
  dir=$(cd "$dir" && pwd -P)
  local timeout="${ORK_STOP_TIMEOUT:-20}"
  for name in "${COMPONENTS[@]}"; do
    if pid=$(component_pid "$dir" "$name"); then
      log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      local deadline=$((SECONDS + timeout))
      while component_pid "$dir" "$name" >/dev/null; do
        if ((SECONDS >= deadline)); then
          log "$name did not exit after ${timeout}s; sending SIGKILL"
          kill -KILL "$pid" 2>/dev/null || true
          deadline=$((SECONDS + 5))
          timeout=0
        fi
        sleep 0.1
      done
    fi
    rm -f "$dir/run/$name.pid"
  done
  log "stopped (logs kept in $dir/logs)"
}

cmd_status() {
  local dir=$1 name pid up=1
  [[ -d $dir ]] || {
    echo "down (no such directory: $dir)"
    return 1
  }
  dir=$(cd "$dir" && pwd -P)
  for name in etcd kube-apiserver kube-controller-manager; do
    if pid=$(component_pid "$dir" "$name"); then
      echo "$name: running (pid $pid)"
    else
      echo "$name: not running"
      up=0
    fi
  done
  if ((up)) && [[ $(api_get "$dir" /readyz 2>/dev/null) == ok ]]; then
    echo "up: $(<"$dir/run/server") (kubeconfig: $dir/kubeconfig)"
    return 0
  fi
  echo "down"
  return 1
}

main() {
  [[ $# -ge 1 ]] || usage
  local cmd=$1
  shift
  case $cmd in
  install)
    [[ $# -eq 0 ]] || usage
    cmd_install
    ;;
  start | stop | status)
    [[ $# -eq 1 ]] || usage
    "cmd_$cmd" "$1"
    ;;
  -h | --help | help) usage ;;
  *) usage ;;
  esac
}

main "$@"
