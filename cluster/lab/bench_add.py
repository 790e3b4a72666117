"""Adding a node online: a mesh of 3 real peerd (cluster/testbed-mesh's); each round one more node is committed to
the cluster's configuration through the leader (`peerctl node add NAME --member-only`, its certificate issued
beforehand), started from a file that names only itself and one member, and removed again (`peerctl node remove`).
No existing node is edited or restarted.

  cluster/bench-add [--rounds 5]     PEER_BIN: the build to measure (default: the debug build, built if missing)

Measures per round: the commit (`node add` run → returned committed), the new node's start (→ its control socket
answers), and from `node add` to the new node alive in every member's view and on the cluster's epoch (the
membership part of issue 18's "add a node online ≤ 15 s"; the app and DNS are not part of this test bed).
"""
import argparse, json, os, statistics, subprocess, sys, time

from .base import RUN_DIR, ROOT, build_missing, die, log, wait

os.environ.setdefault("PEER_BIN", os.path.join(ROOT, ".build/debug"))
from . import mesh  # noqa: E402  (reads PEER_BIN)

NODES = ["m1", "m2", "m3"]
NEW = "m4"


def peerctl(*args):
    return subprocess.run([f"{mesh.BIN}/peerctl", *args], capture_output=True, text=True)


def members(directory, node):
    r = peerctl("members", "--config", f"{directory}/{node}/peer.yml", "--json")
    return {m["name"]: m for m in json.loads(r.stdout)["members"]} if r.returncode == 0 else {}


def leader(directory):
    r = peerctl("who", "--config", f"{directory}/m1/peer.yml", "--json")
    return json.loads(r.stdout).get("leader") if r.returncode == 0 else None


def epoch(directory, node):
    r = peerctl("config", "show", "--config", f"{directory}/{node}/peer.yml")
    return r.stdout.split("\n")[0].split(" ")[1] if r.returncode == 0 else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    mesh.BIN = os.environ["PEER_BIN"]
    directory = os.path.join(RUN_DIR, "bench-add")
    build_missing(mesh.BIN, config="release" if mesh.BIN.endswith("release") else "debug")
    try:
        mesh.up(len(NODES), directory)
        if not wait(lambda: leader(directory) and all(m.get("status") == "alive" for n in NODES
                                                      for m in members(directory, n).values()), 20):
            die("the mesh did not come up")
        log(f"binaries: {mesh.BIN}; {len(NODES)} nodes; adding and removing {NEW} {a.rounds} times")
        template = open(f"{directory}/m2/peer.yml").read()
        head = template[:template.index("  members:\n") + len("  members:\n")]
        commits, starts, totals = [], [], []
        for round in range(1, a.rounds + 1):
            first = leader(directory)
            # A certificate issued after the last removal's revocation (which covers every earlier one).
            peerctl("cert", "issue", "--dir", f"{directory}/pki", NEW, "--address", mesh.PREFIX + NEW[1:], "--force")
            node = f"{directory}/{NEW}"
            subprocess.run(["rm", "-rf", node])
            os.makedirs(node)
            with open(f"{node}/peer.yml", "w") as f:
                f.write(head.replace("m2", NEW).replace(mesh.PREFIX + "2", mesh.PREFIX + NEW[1:])
                        + f"    - name: m1\n      address: {mesh.PREFIX}1:7946\n"
                        + f"    - name: {NEW}\n      address: {mesh.PREFIX}{NEW[1:]}:7946\n")
            os.chmod(f"{node}/peer.yml", 0o600)
            t0 = time.time()
            r = peerctl("node", "add", NEW, "--address", mesh.PREFIX + NEW[1:], "--config", f"{directory}/{first}/peer.yml",
                        "--member-only")
            if r.returncode != 0 or f"{NEW} is a member" not in r.stdout:
                die(f"round {round}: node add on {first}: {r.stdout}{r.stderr}")
            committed = time.time()
            commits.append(committed - t0)
            mesh.start(directory, NEW)
            starts.append(time.time() - committed)
            everyone = NODES + [NEW]
            target = epoch(directory, first)

            def joined():
                return epoch(directory, NEW) == target and all(
                    members(directory, n).get(m, {}).get("status") == "alive" for n in everyone for m in everyone)

            if not wait(joined, 30, step=0.05):
                die(f"round {round}: {NEW} not alive everywhere on epoch {target} within 30 s")
            totals.append(time.time() - t0)
            print(f"  round {round}: commit {commits[-1]:.3f}s, start {starts[-1]:.3f}s, "
                  f"node add → alive everywhere on epoch {target}: {totals[-1]:.3f}s", flush=True)
            now = leader(directory)
            r = peerctl("node", "remove", NEW, "--config", f"{directory}/{now}/peer.yml", "--wait", "0")
            if r.returncode != 0 or "out of the cluster's configuration" not in r.stdout:
                die(f"round {round}: node remove on {now}: {r.stdout}{r.stderr}")
            removed = time.time()
            pid = mesh.pid_of(directory, NEW)
            if pid:
                os.kill(pid, 9)
            os.remove(f"{node}/pid")
            # A revocation covers every certificate issued up to its second: the next one is issued after it.
            wait(lambda: int(time.time()) > int(removed) + 1, 3, step=0.05)
        median = statistics.median
        print(f"commit (node add → committed): median {median(commits):.3f}s, max {max(commits):.3f}s")
        print(f"start of the new node (→ control socket answers): median {median(starts):.3f}s")
        print(f"node add → new node alive in every view, on the cluster's epoch: median {median(totals):.3f}s, "
              f"max {max(totals):.3f}s (target for the whole join, app and DNS included: ≤ 15 s)")
        sys.exit(0 if max(totals) <= 15 else 1)
    finally:
        mesh.down(directory)


if __name__ == "__main__":
    main()
