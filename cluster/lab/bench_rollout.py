"""Rolling-deploy benchmark: 3 real peerd (release build), each with its own nginx and the test app, one mesh,
settle time 0, wrk keeping every node's nginx busy during every rollout.

  cluster/bench-rollout [--rounds 3] [--connections 4]

Per round: a rolling deploy of the other test image (v1 ↔ v2) from a different node, timed end to end, and
compared with the sum of the three nodes' own swaps (their deploy records); then a broken image (health never
passes), which must stop at the first node. Afterwards: non-2xx responses and socket errors from wrk on every
node, how many nodes ever served the broken image, and the DNS records deleted and "node removed" / "no node
is healthy" notifications at the Cloudflare stand-in during the rollouts (0 without faults: a node stays in
DNS during its own turn). Needs the test bed (cluster/testbed up).
"""
import argparse, json, os, re, statistics, subprocess, sys, time

from .base import RUN_DIR

os.environ.setdefault("PEER_ROLLOUT_SETTLE", "0s")
os.environ.setdefault("PEER_CLUSTER_DIR", os.path.join(RUN_DIR, "bench-rollout"))
from .cluster import *  # noqa: E402,F403

REPO = os.environ.get("PEER_REGISTRY", "127.0.0.1:5000") + "/peer-testapp"


def history(n):
    r = sh(f"{BIN}/peerctl", "deploys", "--json", "--config", f"{node_dir(n)}/peer.yml", check=False)
    return json.loads(r.stdout) if r.returncode == 0 else []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=4)
    a = ap.parse_args()
    try:
        up()
        print(f"binaries: {BIN}; 3 nodes, settle 0 s; load: wrk, {a.connections} connections per node", flush=True)
        duration = a.rounds * 40 + 10
        wrks = [subprocess.Popen(["wrk", "-t1", f"-c{a.connections}", f"-d{duration}s", "-H", "Host: shop.example.test",
                                  f"http://{addr(n)}:8080/"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for n in NODES]
        time.sleep(2)
        before = state()
        totals, ratios = [], []
        for r in range(a.rounds):
            image = f"{REPO}:{'v2' if r % 2 == 0 else 'v1'}"
            via = NODES[r % 3]
            t0 = time.time()
            out = sh(f"{BIN}/peerctl", "deploy", image, "--config", f"{node_dir(via)}/peer.yml", check=False)
            total = time.time() - t0
            if out.returncode != 0:
                sys.exit(f"rollout {r + 1} failed: {out.stdout}")
            swaps = [next(d for d in reversed(history(n)) if d["image"] == image)["durationMs"] / 1000 for n in NODES]
            totals.append(total)
            ratios.append(total / (3 * statistics.median(swaps) + 1))
            print(f"  rollout {r + 1} of {image} via {via}: {total:.3f}s end to end; node swaps "
                  f"{', '.join(f'{s:.3f}s' for s in swaps)}; budget 3 × median swap + 1 s = {3 * statistics.median(swaps) + 1:.3f}s", flush=True)
            t0 = time.time()
            bad = sh(f"{BIN}/peerctl", "deploy", f"{REPO}:bad", "--config", f"{node_dir(via)}/peer.yml", check=False)
            print(f"  broken image via {via}: exit {bad.returncode} after {time.time() - t0:.3f}s: "
                  f"{[l for l in bad.stdout.splitlines() if 'rollout' in l][-1:]}", flush=True)
        after = state()
        deletes = sum(len(m["deleted"]) for m in after["mutations"][len(before["mutations"]):])
        alerts = [n["title"] for n in after["notifications"][len(before["notifications"]):]
                  if "removed from" in n["title"] or "No node is healthy" in n["title"]]
        for w in wrks:
            w.wait()
        non2xx, errors, requests = 0, 0, 0
        for n, w in zip(NODES, wrks):
            text = w.stdout.read()
            m = re.search(r"(\d+) requests in", text)
            requests += int(m.group(1)) if m else 0
            m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
            non2xx += int(m.group(1)) if m else 0
            m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
            errors += sum(int(x) for x in m.groups()) if m else 0
        served_bad = [n for n in NODES if any(d["image"].endswith(":bad") and d["result"] == "succeeded" for d in history(n))]
        tried_bad = [n for n in NODES if any(d["image"].endswith(":bad") for d in history(n))]
        print(f"load: {requests} requests, {non2xx} non-2xx, {errors} socket errors (see docs/benchmarks.md on keep-alive reads)")
        print(f"rollout end to end: median {statistics.median(totals):.3f}s; ratio to the budget: max {max(ratios):.2f} (≤ 1 meets it)")
        print(f"broken image: tried on {tried_bad}, served by {served_bad or 'no node'}")
        print(f"DNS during the rollouts: {deletes} records deleted, {len(alerts)} removal/unhealthy notifications {alerts}")
    finally:
        down()

