"""The local multi-node test bed, as commands: cluster/up, cluster/down, cluster/status, cluster/fault.

  up [N]                 N nodes (default 3, at most 50) f1…fN on PEER_CLUSTER_PREFIX (127.0.7.) 1…N: nginx on :8080,
                         mesh on :7946, metrics on :9464, the Cloudflare stand-in on 127.0.0.1:8787; v1 deployed.
                         Up to 10 nodes the debug build, more the release build (PEER_BIN chooses)
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
import json, os, sys

from . import testbed
from .base import ROOT, build, log


def prepare(args):
    """Chooses the cluster (before lab.cluster is imported) and, for up, builds what it runs."""
    config = "debug"
    if args[:1] == ["up"]:
        count = int(args[1]) if len(args) > 1 else 3
        if not 1 <= count <= 50:
            sys.exit("up: between 1 and 50 nodes")
        os.environ["PEER_CLUSTER_NODES"] = str(count)
        # Up to 10 nodes the debug build (quick to build). More: the release build — a debug peerd costs ~5 % of a
        # core idle, which 50 of them on two cores cannot afford (release: ~1 %).
        if count > 10:
            config = "release"
        testbed.services_up()
        os.environ.setdefault("PEER_BIN", os.path.join(ROOT, ".build", config))
        log(f"building peerd and peerctl ({config}) and the Cloudflare stand-in (the first release build takes ~10 minutes)")
        build("peerd", "peerctl", config=config)
        build("peer-stub")
    os.environ.setdefault("PEER_BIN", os.path.join(ROOT, ".build", config))


def known(cl, n):
    if n not in cl.NODES:
        sys.exit(f"no node {n}: the cluster has {', '.join(cl.NODES)}")
    return n


def status(cl):
    lead = cl.leader()
    for n in cl.NODES:
        pid = cl.pid_of(n)
        state = "down"
        if pid:
            with open(f"/proc/{pid}/stat") as f:
                state = "paused" if f.read().split(") ")[1].startswith("T") else "running"
        image = "-"
        if state == "running":
            r = cl.sh(f"{cl.BIN}/peerctl", "status", "--json", "--config", f"{cl.node_dir(n)}/peer.yml", check=False)
            if r.returncode == 0:
                image = (json.loads(r.stdout).get("serving") or {}).get("image", "-")
        print(f"{n:4} {cl.addr(n):12} peerd {state:8} {'leader' if n == lead else '':7} {image}")
    try:
        print("DNS", cl.NAME + ":", ", ".join(sorted(cl.contents())) or "no records")
    except OSError:
        print("DNS stand-in not running")
    rules = [line for line in cl.sh("iptables", "-w", "-S", "INPUT", check=False).stdout.splitlines() if cl.RULE_TAG in line]
    print(f"fault rules: {len(rules)}")


def fault(cl, rest):
    if not rest:
        sys.exit(__doc__)
    what = rest[0]
    if what == "kill" and len(rest) > 1:
        cl.kill(known(cl, rest[1]))
    elif what == "restart" and len(rest) > 1:
        n = known(cl, rest[1])
        if cl.running(n):
            sys.exit(f"{n}'s peerd runs already")
        cl.start(n)
    elif what == "pause" and len(rest) > 1:
        cl.pause(known(cl, rest[1]))
    elif what == "resume" and len(rest) > 1:
        cl.resume(known(cl, rest[1]))
    elif what == "partition" and len(rest) > 1:
        groups = [[known(cl, n) for n in g.split(",") if n] for g in rest[1].split("|")]
        if len(groups) < 2:
            sys.exit("partition: at least two groups, e.g. f1,f2|f3")
        cl.partition(groups)
    elif what == "loss" and len(rest) > 2:
        pct = float(rest[2])
        if not 0 < pct <= 100:
            sys.exit("loss: a percentage above 0 and at most 100")
        cl.loss(known(cl, rest[1]), pct)
    elif what == "heal":
        cl.heal()
    else:
        sys.exit(__doc__)
    print(f"fault {' '.join(rest)}: done")


def main(args):
    if not args:
        sys.exit(__doc__)
    prepare(args)
    from . import cluster as cl
    command, rest = args[0], args[1:]
    if command == "up":
        cl.up()
        print(f"cluster up: {len(cl.NODES)} nodes in {cl.DIR}")
        status(cl)
    elif command == "down":
        cl.down()
        print("cluster down")
    elif command == "status":
        status(cl)
    elif command == "fault":
        fault(cl, rest)
    else:
        sys.exit(__doc__)
