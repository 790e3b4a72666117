# Shared helpers for the cluster/ scripts. Source it; do not run it.
# Everything here only ever touches loopback addresses.
set -euo pipefail

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$CLUSTER_DIR/.." && pwd)"
RUN_DIR="${PEER_RUN_DIR:-$CLUSTER_DIR/.run}"
REGISTRY="${PEER_REGISTRY:-127.0.0.1:5000}"
TESTAPP_REPO="$REGISTRY/peer-testapp"
DOCKER_SOCK="${DOCKER_HOST_SOCK:-/var/run/docker.sock}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Packages the test bed needs, by the command that proves each one is there.
need_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    command -v nginx >/dev/null || missing+=(nginx-light)
    # The test app image is FROM scratch: it needs the static busybox (with httpd), not the dynamic one.
    local linkage; linkage="$(ldd /bin/busybox 2>&1 || true)"
    if ! { [ -x /bin/busybox ] && [[ $linkage == *"not a dynamic"* ]] && /bin/busybox httpd --help >/dev/null 2>&1; }; then
        missing+=(busybox-static)
    fi
    command -v wrk >/dev/null || missing+=(wrk)
    command -v iptables >/dev/null || missing+=(iptables)
    command -v curl >/dev/null || missing+=(curl)
    if [ ${#missing[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || die "missing packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

docker_up() {
    if curl -sf --unix-socket "$DOCKER_SOCK" http://docker/_ping >/dev/null 2>&1; then return 0; fi
    mkdir -p "$RUN_DIR"
    log "starting dockerd (vfs storage driver)"
    # setsid: dockerd must outlive the shell that started it.
    setsid dockerd --storage-driver=vfs --host="unix://$DOCKER_SOCK" \
        >"$RUN_DIR/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 1 150); do
        curl -sf --unix-socket "$DOCKER_SOCK" http://docker/_ping >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    tail -20 "$RUN_DIR/dockerd.log" >&2
    die "dockerd did not answer on $DOCKER_SOCK within 30 s (log: $RUN_DIR/dockerd.log)"
}

registry_up() {
    if curl -sf "http://$REGISTRY/v2/" >/dev/null 2>&1; then return 0; fi
    mkdir -p "$RUN_DIR/registry"
    cat >"$RUN_DIR/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $RUN_DIR/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY
YML
    log "starting registry on $REGISTRY"
    setsid docker-registry serve "$RUN_DIR/registry.yml" >"$RUN_DIR/registry.log" 2>&1 </dev/null &
    for _ in $(seq 1 100); do
        curl -sf "http://$REGISTRY/v2/" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "registry did not answer on $REGISTRY (log: $RUN_DIR/registry.log)"
}

# A node of the test bed: its own folder, nginx on its own loopback address, a peerd config.
#   node_files NAME ADDRESS [PORT]   write $RUN_DIR/nodes/NAME/{peer.yml,nginx/}
#   nginx_up NAME                     start that node's nginx (idempotent)
node_dir() { echo "$RUN_DIR/nodes/$1"; }

node_files() {
    local name="$1" address="$2" port="${3:-80}" dir
    dir="$(node_dir "$name")"
    mkdir -p "$dir/nginx/sites" "$dir/nginx/logs" "$dir/nginx/temp" "$dir/state" "$dir/run"
    chmod 0777 "$dir/nginx/temp"
    cat >"$dir/nginx/nginx.conf" <<CONF
# Test bed nginx for node $name: its own pid, logs and sites; the peer-managed site is in sites/.
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/logs/error.log warn;
worker_processes 2;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/nginx/temp/body;
    proxy_temp_path $dir/nginx/temp/proxy;
    fastcgi_temp_path $dir/nginx/temp/fastcgi;
    uwsgi_temp_path $dir/nginx/temp/uwsgi;
    scgi_temp_path $dir/nginx/temp/scgi;
    include $dir/nginx/sites/*.conf;
}
CONF
    cat >"$dir/peer.yml" <<YML
# Test bed config for node $name (written by cluster/lib.sh).
node:
  name: $name
  address: $address
app:
  name: testapp
  port: 8080
  health:
    path: /health
    timeout: ${PEER_HEALTH_TIMEOUT:-15s}
  env:
    NODE_NAME: $name
  stop_grace: 2s
  drain_timeout: 10s
nginx:
  site: $dir/nginx/sites/peer-testapp.conf
  listen: $address:$port
  server_name: testapp.local
  prefix: $dir/nginx
  config: $dir/nginx/nginx.conf
  pid_file: $dir/nginx/nginx.pid
state_dir: $dir/state
control:
  socket: $dir/run/peerd.sock
YML
    chmod 0600 "$dir/peer.yml"
}

nginx_up() {
    local dir; dir="$(node_dir "$1")"
    if [ -f "$dir/nginx/nginx.pid" ] && kill -0 "$(cat "$dir/nginx/nginx.pid")" 2>/dev/null; then return 0; fi
    nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -e "$dir/nginx/logs/error.log"
}

nginx_down() {
    local dir; dir="$(node_dir "$1")"
    if [ -f "$dir/nginx/nginx.pid" ]; then kill -QUIT "$(cat "$dir/nginx/nginx.pid")" 2>/dev/null || true; fi
}

# A second registry that requires a login (htpasswd), for the "registry refuses auth" tests.
AUTH_REGISTRY="${PEER_AUTH_REGISTRY:-127.0.0.1:5001}"
AUTH_REGISTRY_USER=peer
AUTH_REGISTRY_PASSWORD=testbed-secret

auth_registry_up() {
    if curl -s -o /dev/null -w '%{http_code}' "http://$AUTH_REGISTRY/v2/" 2>/dev/null | grep -q 401; then return 0; fi
    mkdir -p "$RUN_DIR/auth-registry"
    python3 -W ignore -c "import crypt, sys; print(sys.argv[1] + ':' + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH)))" \
        "$AUTH_REGISTRY_USER" "$AUTH_REGISTRY_PASSWORD" >"$RUN_DIR/auth-registry.htpasswd"
    cat >"$RUN_DIR/auth-registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $RUN_DIR/auth-registry
http:
  addr: $AUTH_REGISTRY
auth:
  htpasswd:
    realm: peer-testbed
    path: $RUN_DIR/auth-registry.htpasswd
YML
    log "starting a registry that requires a login on $AUTH_REGISTRY"
    setsid docker-registry serve "$RUN_DIR/auth-registry.yml" >"$RUN_DIR/auth-registry.log" 2>&1 </dev/null &
    for _ in $(seq 1 100); do
        curl -s -o /dev/null -w '%{http_code}' "http://$AUTH_REGISTRY/v2/" 2>/dev/null | grep -q 401 && return 0
        sleep 0.1
    done
    die "the login registry did not answer on $AUTH_REGISTRY (log: $RUN_DIR/auth-registry.log)"
}

# Pushes the test app v1 to the login registry as private-app:v1.
auth_registry_push() {
    docker tag "$TESTAPP_REPO:v1" "$AUTH_REGISTRY/private-app:v1"
    echo "$AUTH_REGISTRY_PASSWORD" | docker login -u "$AUTH_REGISTRY_USER" --password-stdin "$AUTH_REGISTRY" >/dev/null
    docker push -q "$AUTH_REGISTRY/private-app:v1" >/dev/null
    docker logout "$AUTH_REGISTRY" >/dev/null
    docker rmi "$AUTH_REGISTRY/private-app:v1" >/dev/null
}
