"""A cluster of real peerd (3 nodes by default, PEER_CLUSTER_NODES up to 50), each with its own nginx and the test app, one mesh with real certificates, DNS at the Cloudflare stand-in
(peer-stub). Every process it starts leaves a pid file in the cluster folder, so that cluster/fault and
cluster/down can act on a cluster that cluster/up started. The environment chooses the cluster before this module
is imported: PEER_CLUSTER_NODES, PEER_CLUSTER_DIR, PEER_CLUSTER_PREFIX and _OFFSET, PEER_BIN."""
import datetime, json, os, shutil, subprocess, sys, time, urllib.request

from .base import ROOT, RUN_DIR, build_missing, cpu_seconds, pid_from_file, sh, wait  # noqa: F401 (cpu_seconds, sh, wait: for the programs)

BIN = os.environ.get("PEER_BIN", os.path.join(ROOT, ".build/release"))
BUILD = "debug" if BIN.endswith("debug") else "release"
STUB_BIN = os.path.join(ROOT, ".build/debug/peer-stub")
DIR = os.environ.get("PEER_CLUSTER_DIR", os.path.join(RUN_DIR, "cluster3"))
PREFIX = os.environ.get("PEER_CLUSTER_PREFIX", "127.0.7.")
OFFSET = int(os.environ.get("PEER_CLUSTER_OFFSET", "0"))
STUB = "http://127.0.0.1:8787"
ZONE, NAME, TOKEN = "example.test", "shop.example.test", "bench-token-0123456789"
IMAGE = os.environ.get("PEER_REGISTRY", "127.0.0.1:5000") + "/peer-testapp:v1"


def _node_count():
    if "PEER_CLUSTER_NODES" in os.environ:
        return int(os.environ["PEER_CLUSTER_NODES"])
    # A cluster that cluster/up started: as many nodes as it has folders.
    if os.path.isdir(DIR):
        found = [d for d in os.listdir(DIR) if d.startswith("f") and d[1:].isdigit()]
        if found:
            return len(found)
    return 3


NODES = [f"f{i}" for i in range(1, _node_count() + 1)]
SETTLE = os.environ.get("PEER_ROLLOUT_SETTLE", "1s")
procs = {}


def node_dir(n):
    return f"{DIR}/{n}"


def addr(n):
    return PREFIX + str(int(n[1:]) + OFFSET)


def write_node(n):
    d = node_dir(n)
    for sub in ["nginx/sites", "nginx/logs", "nginx/temp", "state"]:
        os.makedirs(f"{d}/{sub}", exist_ok=True)
    os.chmod(f"{d}/nginx/temp", 0o777)
    with open(f"{d}/nginx/nginx.conf", "w") as f:
        f.write(f"""pid {d}/nginx/nginx.pid;
error_log {d}/nginx/logs/error.log warn;
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/nginx/temp/body; proxy_temp_path {d}/nginx/temp/proxy;
    fastcgi_temp_path {d}/nginx/temp/fastcgi; uwsgi_temp_path {d}/nginx/temp/uwsgi; scgi_temp_path {d}/nginx/temp/scgi;
    include {d}/nginx/sites/*.conf;
}}
""")
    members = "\n".join(f"    - name: {m}\n      address: {addr(m)}:7946" for m in NODES)
    with open(f"{d}/peer.yml", "w") as f:
        f.write(f"""node:
  name: {n}
  address: {addr(n)}
app:
  name: testapp
  port: 8080
  health:
    path: /health
    timeout: 10s
  stop_grace: 2s
  drain_timeout: 2s
nginx:
  site: {d}/nginx/sites/peer-testapp.conf
  listen: {addr(n)}:8080
  server_name: shop.example.test
  prefix: {d}/nginx
  config: {d}/nginx/nginx.conf
  pid_file: {d}/nginx/nginx.pid
state_dir: {d}/state
control:
  socket: {d}/peerd.sock
metrics:
  listen: {addr(n)}:9464
mesh:
  listen: {addr(n)}:7946
  ca: {DIR}/pki/ca.pem
  cert: {DIR}/pki/{n}.pem
  key: {DIR}/pki/{n}-key.pem
  # Above 20 nodes on one small machine, each peerd gets a sliver of a core: the WAN timings.
  profile: {"wan" if len(NODES) > 20 else "lan"}
  members:
{members}
dns:
  api_base: {STUB}/client/v4
  zone: {ZONE}
  name: {NAME}
  token_file: {DIR}/pki/cf-token
  hold_down: 2s
notify:
  ntfy:
    server: {STUB}/notify/ntfy
    topic: peer-cluster
rollout:
  settle: {SETTLE}
  node_timeout: {os.environ.get("PEER_ROLLOUT_NODE_TIMEOUT", "120s")}
  parallel: {max(1, len(NODES) // 10)}
""")
    os.chmod(f"{d}/peer.yml", 0o600)


def pid_file(n):
    return f"{DIR}/stub.pid" if n == "stub" else f"{node_dir(n)}/peerd.pid"


def pid_of(n):
    """The pid of a running peerd (or the stub) of this cluster, from its pid file; None when it does not run."""
    return pid_from_file(pid_file(n))


def start(n):
    log = open(f"{node_dir(n)}/peerd.log", "a")
    # Its own session: it outlives the script that started it (cluster/up), and ^C there does not reach it.
    procs[n] = subprocess.Popen([f"{BIN}/peerd", "--config", f"{node_dir(n)}/peer.yml", "--log-format", "json"],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    with open(pid_file(n), "w") as f:
        f.write(str(procs[n].pid))
    for _ in range(100):
        if sh(f"{BIN}/peerctl", "status", "--config", f"{node_dir(n)}/peer.yml", check=False).returncode == 0:
            return
        time.sleep(0.1)
    sys.exit(f"{n} did not start")


def kill(n):
    pid = pid_of(n)
    if pid:
        os.kill(pid, 9)
    if n in procs:
        procs[n].wait()
    else:
        wait(lambda: pid_of(n) is None, 5)


def running(n):
    return pid_of(n) is not None


def state():
    with urllib.request.urlopen(STUB + "/_stub/state", timeout=5) as r:
        return json.load(r)


def stub_answers():
    try:
        state()
        return True
    except OSError:
        return False


def contents():
    return {r["content"] for r in state()["records"] if r["name"] == NAME}



def events(n, msg):
    out = []
    try:
        for line in open(f"{node_dir(n)}/peerd.log"):
            if f'"msg":"{msg}"' in line:
                e = json.loads(line)
                e["t"] = datetime.datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp()
                out.append(e)
    except FileNotFoundError:
        pass
    return out


def dns_writes_and_stale():
    """The DNS record writes the nodes logged, (time, term), and those made under a stale term: after some node
    had begun to lead under a higher term."""
    leads = sorted((e["t"], int(e["lease.term"])) for n in NODES for e in events(n, "this node leads"))
    writes = [(e["t"], int(e["lease.term"])) for n in NODES for msg in ("DNS record removed", "DNS record added") for e in events(n, msg)]
    return writes, [w for w in writes if any(lt < w[0] and lterm > w[1] for lt, lterm in leads)]


def who(n):
    r = sh(f"{BIN}/peerctl", "who", "--json", "--config", f"{node_dir(n)}/peer.yml", check=False)
    return json.loads(r.stdout) if r.returncode == 0 else None


def leader():
    for n in NODES:
        w = who(n) if running(n) else None
        if w and w.get("thisNodeLeads"):
            return n
    return None




def up():
    """Builds what is missing, writes certificates and configs, starts the stub, nginx and peerd, deploys v1."""
    build_missing(BIN, config=BUILD, stub=True)
    if os.path.isdir(DIR):
        down()
    shutil.rmtree(DIR, ignore_errors=True)
    os.makedirs(f"{DIR}/pki")
    sh(f"{BIN}/peerctl", "ca", "init", "--dir", f"{DIR}/pki", "--cluster", "cluster3")
    for n in NODES:
        sh(f"{BIN}/peerctl", "cert", "issue", "--dir", f"{DIR}/pki", n, "--address", addr(n))
    with open(f"{DIR}/pki/cf-token", "w") as f:
        f.write(TOKEN)
    os.chmod(f"{DIR}/pki/cf-token", 0o600)
    procs["stub"] = subprocess.Popen([STUB_BIN, "127.0.0.1", "8787", ZONE, f"{DIR}/pki/cf-token"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
    with open(pid_file("stub"), "w") as f:
        f.write(str(procs["stub"].pid))
    if not wait(stub_answers, 10):
        sys.exit(f"the Cloudflare stand-in did not answer on {STUB}")
    for n in NODES:
        write_node(n)
        sh("nginx", "-p", f"{node_dir(n)}/nginx", "-c", f"{node_dir(n)}/nginx/nginx.conf", "-e", f"{node_dir(n)}/nginx/logs/error.log")
        start(n)
    r = sh(f"{BIN}/peerctl", "deploy", IMAGE, "--config", f"{node_dir(NODES[0])}/peer.yml", check=False)
    if r.returncode != 0:
        sys.exit(f"the first rollout failed: {r.stdout}{r.stderr}")


def down():
    """Stops every process of the cluster (found by pid files, so also a cluster another script started), removes
    its containers and the iptables rules cluster/fault added."""
    heal()
    nodes = sorted((d for d in os.listdir(DIR) if os.path.isdir(f"{DIR}/{d}") and d != "pki"), key=lambda d: int(d[1:]) if d[1:].isdigit() else 0) if os.path.isdir(DIR) else []
    # All at once: SIGTERM lets each finish what it does; whatever still runs after 15 s is killed.
    pids = {n: pid_of(n) for n in nodes}
    for n, pid in pids.items():
        if pid:
            os.kill(pid, 18)  # SIGCONT, in case it was paused
            os.kill(pid, 15)
    wait(lambda: all(pid_of(n) is None for n in nodes), 15)
    for n in nodes:
        if pid_of(n):
            os.kill(pid_of(n), 9)
    for n in nodes:
        nginx_pid = f"{node_dir(n)}/nginx/nginx.pid"
        if os.path.exists(nginx_pid):
            sh("kill", "-QUIT", open(nginx_pid).read().strip(), check=False)
        sh("sh", "-c", f"docker ps -aq --filter label=dev.peer.node={n} | xargs -r docker rm -f", check=False)
    stub = pid_of("stub")
    if stub:
        os.kill(stub, 15)


# Faults (cluster/fault, cluster/fault-chaos). iptables rules carry this comment, so heal() and down() find them all.
RULE_TAG = "peer-cluster-fault"


def iptables(*args):
    return sh("iptables", "-w", *args, check=False)


def cut(a, b):
    """Drops everything between the addresses of nodes a and b, both ways."""
    for src, dst in ((addr(a), addr(b)), (addr(b), addr(a))):
        iptables("-I", "INPUT", "-s", src, "-d", dst, "-m", "comment", "--comment", RULE_TAG, "-j", "DROP")


def partition(groups):
    """groups: lists of node names; every link between two groups is cut."""
    for i, g in enumerate(groups):
        for h in groups[i + 1:]:
            for a in g:
                for b in h:
                    cut(a, b)


def loss(n, percent):
    """Drops that share of the mesh traffic (port 7946, both ways) of node n; clients of its nginx are not affected."""
    p = f"{percent / 100:.3f}"
    for direction in (("-d", addr(n), "--dport", "7946"), ("-s", addr(n), "--sport", "7946")):
        for proto in ("tcp", "udp"):
            iptables("-I", "INPUT", "-p", proto, direction[0], direction[1], direction[2], direction[3], "-m", "statistic",
                     "--mode", "random", "--probability", p, "-m", "comment", "--comment", RULE_TAG, "-j", "DROP")


def heal():
    """Removes every rule cluster/fault added."""
    out = sh("iptables", "-w", "-S", "INPUT", check=False).stdout
    for line in out.splitlines():
        if RULE_TAG in line and line.startswith("-A "):
            iptables(*(["-D"] + line.split()[1:]))


def pause(n):
    os.kill(pid_of(n), 19)  # SIGSTOP: the process is there but answers nothing


def resume(n):
    os.kill(pid_of(n), 18)
