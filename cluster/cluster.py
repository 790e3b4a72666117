#!/usr/bin/env python3
"""The local multi-node test bed, as commands (cluster/up, cluster/down, cluster/fault call this).

  up [N]                 N nodes (default 3, at most 50) f1…fN on PEER_CLUSTER_PREFIX (127.0.7.) 1…N: nginx on :8080,
                         mesh on :7946, metrics on :9464, the Cloudflare stand-in on 127.0.0.1:8787; v1 deployed
  down                   stop everything up started, remove its containers and every fault rule
  status                 each node: peerd running/paused, leader, image; the DNS records at the stand-in
  fault kill NODE        SIGKILL its peerd (nginx and the app keep running, as when peerd crashes)
  fault restart NODE     start its peerd again
  fault pause NODE       SIGSTOP its peerd (alive but silent: the hardest failure to tell)
  fault resume NODE      SIGCONT
  fault partition A,B|C  cut every link between the groups (iptables DROP, both ways)
  fault loss NODE PCT    drop PCT % of NODE's mesh packets (both ways, TCP and UDP)
  fault heal             remove every rule fault added
"""
import os, sys

if len(sys.argv) > 2 and sys.argv[1] == "up":
    count = int(sys.argv[2])
    if not 1 <= count <= 50:
        sys.exit("up: between 1 and 50 nodes")
    os.environ["PEER_CLUSTER_NODES"] = str(count)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peercluster import *  # noqa: E402,F403


def known(n):
    if n not in NODES:
        sys.exit(f"no node {n}: the cluster has {', '.join(NODES)}")
    return n


def status():
    lead = leader()
    for n in NODES:
        pid = pid_of(n)
        state = "down"
        if pid:
            with open(f"/proc/{pid}/stat") as f:
                state = "paused" if f.read().split(") ")[1].startswith("T") else "running"
        image = "-"
        if state == "running":
            r = sh(f"{BIN}/peerctl", "status", "--json", "--config", f"{node_dir(n)}/peer.yml", check=False)
            if r.returncode == 0:
                image = (json.loads(r.stdout).get("serving") or {}).get("image", "-")
        print(f"{n:4} {addr(n):12} peerd {state:8} {'leader' if n == lead else '':7} {image}")
    try:
        print("DNS", NAME + ":", ", ".join(sorted(contents())) or "no records")
    except OSError:
        print("DNS stand-in not running")
    rules = [l for l in sh("iptables", "-w", "-S", "INPUT", check=False).stdout.splitlines() if RULE_TAG in l]
    print(f"fault rules: {len(rules)}")


def main(args):
    if not args:
        sys.exit(__doc__)
    cmd, rest = args[0], args[1:]
    if cmd == "up":
        up()
        print(f"cluster up: {len(NODES)} nodes in {DIR}")
        status()
    elif cmd == "down":
        down()
        print("cluster down")
    elif cmd == "status":
        status()
    elif cmd == "fault":
        if not rest:
            sys.exit(__doc__)
        what = rest[0]
        if what == "kill":
            kill(known(rest[1]))
        elif what == "restart":
            n = known(rest[1])
            if running(n):
                sys.exit(f"{n}'s peerd runs already")
            start(n)
        elif what == "pause":
            pause(known(rest[1]))
        elif what == "resume":
            resume(known(rest[1]))
        elif what == "partition":
            groups = [[known(n) for n in g.split(",") if n] for g in rest[1].split("|")]
            if len(groups) < 2:
                sys.exit("partition: at least two groups, e.g. f1,f2|f3")
            partition(groups)
        elif what == "loss":
            pct = float(rest[2])
            if not 0 < pct <= 100:
                sys.exit("loss: a percentage above 0 and at most 100")
            loss(known(rest[1]), pct)
        elif what == "heal":
            heal()
        else:
            sys.exit(__doc__)
        print(f"fault {' '.join(rest)}: done")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
