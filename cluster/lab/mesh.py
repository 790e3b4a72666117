"""A mesh of N real peerd processes on their own loopback addresses, with real certificates from `peerctl ca init` /
`peerctl cert issue` and mutual TLS between them. The nodes run no app: the membership layer alone (the demo and
the deploy tests add apps).

  cluster/testbed-mesh up N [DIR]         start nodes m1..mN on 127.0.3.1..N, mesh port 7946; files in DIR
  cluster/testbed-mesh down [DIR]         stop them (SIGTERM, then SIGKILL after 5 s)
  cluster/testbed-mesh kill NODE [DIR]    kill -9 one node
  cluster/testbed-mesh start NODE [DIR]   start one node again
  cluster/testbed-mesh members NODE [DIR] [peerctl arguments]   `peerctl members` on that node

Environment: PEER_BIN (folder with peerd and peerctl; default .build/debug, built if missing), MESH_PREFIX
(127.0.3.), MESH_PROFILE (lan), MESH_CERT_DAYS (397), PEER_LOG_LEVEL (info)."""
import os, shutil, subprocess, sys

from .base import DEBUG_BIN, RUN_DIR, build_missing, die, log, pid_from_file, sh, wait

BIN = os.environ.get("PEER_BIN", DEBUG_BIN)
PREFIX = os.environ.get("MESH_PREFIX", "127.0.3.")
PROFILE = os.environ.get("MESH_PROFILE", "lan")


def pid_of(directory, name):
    return pid_from_file(f"{directory}/{name}/pid")


def start(directory, name):
    """Starts one node; returns when its control socket answers."""
    node = f"{directory}/{name}"
    with open(f"{node}/peerd.log", "a") as out:
        process = subprocess.Popen([f"{BIN}/peerd", "--config", f"{node}/peer.yml", "--log-format", "json", "--log-level",
                                    os.environ.get("PEER_LOG_LEVEL", "info")], stdout=out, stderr=out,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    open(f"{node}/pid", "w").write(str(process.pid))

    def answers():
        if process.poll() is not None:
            sys.stderr.write("".join(open(f"{node}/peerd.log").readlines()[-5:]))
            die(f"{name} exited")
        return sh(f"{BIN}/peerctl", "members", "--config", f"{node}/peer.yml", "--json", check=False).returncode == 0

    if not wait(answers, 10, step=0.1):
        die(f"{name} did not answer on its control socket (log: {node}/peerd.log)")


def up(count, directory):
    if not 1 <= count <= 250:
        die("N must be 1..250")
    build_missing(BIN)
    down(directory)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(f"{directory}/pki")
    sh(f"{BIN}/peerctl", "ca", "init", "--dir", f"{directory}/pki", "--cluster", "mesh-test")
    names = [f"m{i}" for i in range(1, count + 1)]
    members = "".join(f"    - name: {n}\n      address: {PREFIX}{n[1:]}:7946\n" for n in names)
    for n in names:
        address = PREFIX + n[1:]
        os.makedirs(f"{directory}/{n}")
        sh(f"{BIN}/peerctl", "cert", "issue", "--dir", f"{directory}/pki", n, "--address", address, "--days",
           os.environ.get("MESH_CERT_DAYS", "397"))
        node = f"{directory}/{n}"
        with open(f"{node}/peer.yml", "w") as f:
            f.write(f"""node:
  name: {n}
  address: {address}
app:
  name: meshtest
  port: 8080
nginx:
  site: {node}/site.conf
  listen: {address}:18080
  server_name: mesh.local
  pid_file: {node}/nginx.pid
state_dir: {node}/state
control:
  socket: {node}/peerd.sock
metrics:
  listen: {address}:9464
mesh:
  listen: {address}:7946
  ca: {directory}/pki/ca.pem
  cert: {directory}/pki/{n}.pem
  key: {directory}/pki/{n}-key.pem
  profile: {PROFILE}
  members:
{members}""")
        os.chmod(f"{node}/peer.yml", 0o600)
    for n in names:
        start(directory, n)
    log(f"mesh of {count} up in {directory} (nodes m1..m{count} on {PREFIX}{{1..{count}}}:7946)")


def nodes(directory):
    return [d for d in os.listdir(directory) if d.startswith("m") and d[1:].isdigit()] if os.path.isdir(directory) else []


def down(directory):
    """SIGTERM to every node at once; what still runs after 5 s is killed."""
    running = {n: pid_of(directory, n) for n in nodes(directory)}
    for pid in running.values():
        if pid:
            os.kill(pid, 15)
    wait(lambda: all(pid_of(directory, n) is None for n in running), 5, step=0.1)
    for n in running:
        pid = pid_of(directory, n)
        if pid:
            os.kill(pid, 9)
        if os.path.exists(f"{directory}/{n}/pid"):
            os.remove(f"{directory}/{n}/pid")


def main(args):
    usage = "usage: cluster/testbed-mesh up N [DIR] | down [DIR] | kill NODE [DIR] | start NODE [DIR] | members NODE [DIR]"
    if not args:
        die(usage)
    command, rest = args[0], args[1:]
    default = os.path.join(RUN_DIR, "mesh")
    if command == "up" and rest:
        up(int(rest[0]), rest[1] if len(rest) > 1 else default)
    elif command == "down":
        down(rest[0] if rest else default)
    elif command == "kill" and rest:
        directory = rest[1] if len(rest) > 1 else default
        pid = pid_of(directory, rest[0])
        if not pid:
            die(f"{rest[0]} does not run")
        os.kill(pid, 9)
        os.remove(f"{directory}/{rest[0]}/pid")
    elif command == "start" and rest:
        start(rest[1] if len(rest) > 1 else default, rest[0])
    elif command == "members" and rest:
        directory = rest[1] if len(rest) > 1 else default
        r = subprocess.run([f"{BIN}/peerctl", "members", "--config", f"{directory}/{rest[0]}/peer.yml", *rest[2:]])
        sys.exit(r.returncode)
    else:
        die(usage)
