"""Adding a node online, to serving and in DNS: a cluster of 3 real peerd with nginx, the test app (v1 rolled out)
and DNS at the Cloudflare stand-in (cluster/up's); each round a fourth node is committed to the cluster's
configuration through the leader (`peerctl node add f4 --member-only`, its certificate issued beforehand), its
nginx and peerd are started — with no app: nothing in its config names an image — and it is timed until it serves
the cluster's image and its record is at the stand-in. Then it is removed (`peerctl node remove`) and its record
waited out. No existing node is edited or restarted. The image is present on the machine (one dockerd).

  cluster/bench-join [--rounds 5]    PEER_BIN: the build to measure (default: the debug build, built if missing)

Measures per round: the commit; from `node add` to the new node serving the cluster's image (it takes up the
rollout the others ran); from `node add` to its record at the stand-in (after the DNS hold-down, 2 s here).
Issue 18's target: ≤ 15 s.
"""
import argparse, os, statistics, subprocess, sys, time, urllib.request

from .base import RUN_DIR, ROOT, log, wait

os.environ.setdefault("PEER_BIN", os.path.join(ROOT, ".build/debug"))
os.environ.setdefault("PEER_CLUSTER_DIR", os.path.join(RUN_DIR, "bench-join"))
os.environ["PEER_CLUSTER_NODES"] = "3"
from . import cluster  # noqa: E402  (reads the environment)

NEW = "f4"


def peerctl(*args):
    return subprocess.run([f"{cluster.BIN}/peerctl", *args], capture_output=True, text=True)


def serves(node, version):
    req = urllib.request.Request(f"http://{cluster.addr(node)}:8080/", headers={"Host": cluster.NAME})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status == 200 and r.read().decode().strip() == version
    except Exception:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    members = cluster.NODES
    try:
        cluster.up()
        if not wait(lambda: cluster.contents() == {cluster.addr(n) for n in members}, 60):
            sys.exit(f"the cluster's records did not come up: {cluster.contents()}")
        log(f"binaries: {cluster.BIN}; {len(members)} nodes serving v1; adding and removing {NEW} {a.rounds} times")
        commits, serving, in_dns = [], [], []
        config = f"{cluster.node_dir(members[0])}/peer.yml"
        for round in range(1, a.rounds + 1):
            # A certificate issued after the last removal's revocation (which covers every earlier one).
            peerctl("cert", "issue", "--dir", f"{cluster.DIR}/pki", NEW, "--address", cluster.addr(NEW), "--force")
            subprocess.run(["rm", "-rf", cluster.node_dir(NEW)])
            # Its file names the members and itself (as a join file does).
            cluster.NODES = members + [NEW]
            cluster.write_node(NEW)
            cluster.NODES = members
            t0 = time.time()
            r = peerctl("node", "add", NEW, "--address", cluster.addr(NEW), "--config", config, "--member-only")
            if r.returncode != 0 or f"{NEW} is a member" not in r.stdout:
                sys.exit(f"round {round}: node add: {r.stdout}{r.stderr}")
            commits.append(time.time() - t0)
            d = cluster.node_dir(NEW)
            cluster.sh("nginx", "-p", f"{d}/nginx", "-c", f"{d}/nginx/nginx.conf", "-e", f"{d}/nginx/logs/error.log")
            cluster.start(NEW)
            if not wait(lambda: serves(NEW, "v1"), 60, step=0.05):
                sys.exit(f"round {round}: {NEW} does not serve v1 after 60 s (log: {d}/peerd.log)")
            serving.append(time.time() - t0)
            if not wait(lambda: cluster.addr(NEW) in cluster.contents(), 60, step=0.05):
                sys.exit(f"round {round}: no record for {NEW} after 60 s: {cluster.contents()}")
            in_dns.append(time.time() - t0)
            print(f"  round {round}: commit {commits[-1]:.3f}s, node add → serving v1 {serving[-1]:.3f}s, "
                  f"→ in DNS {in_dns[-1]:.3f}s", flush=True)
            r = peerctl("node", "remove", NEW, "--config", config, "--wait", "0")
            if r.returncode != 0 or "out of the cluster's configuration" not in r.stdout:
                sys.exit(f"round {round}: node remove: {r.stdout}{r.stderr}")
            removed = time.time()
            if not wait(lambda: cluster.addr(NEW) not in cluster.contents(), 30):
                sys.exit(f"round {round}: the record of the removed {NEW} is still there: {cluster.contents()}")
            pid = cluster.pid_of(NEW)
            if pid:
                os.kill(pid, 9)
            cluster.sh("kill", "-QUIT", open(f"{d}/nginx/nginx.pid").read().strip(), check=False)
            cluster.sh("sh", "-c", f"docker ps -aq --filter label=dev.peer.node={NEW} | xargs -r docker rm -f", check=False)
            # A revocation covers every certificate issued up to its second: the next one is issued after it.
            wait(lambda: int(time.time()) > int(removed) + 1, 3, step=0.05)
        median = statistics.median
        print(f"commit (node add → committed): median {median(commits):.3f}s, max {max(commits):.3f}s")
        print(f"node add → the new node serves the cluster's image: median {median(serving):.3f}s, max {max(serving):.3f}s")
        print(f"node add → its record in DNS: median {median(in_dns):.3f}s, max {max(in_dns):.3f}s (target ≤ 15 s)")
        sys.exit(0 if max(in_dns) <= 15 else 1)
    finally:
        cluster.down()


if __name__ == "__main__":
    main()
