"""Membership benchmark: real peerd processes (cluster/testbed-mesh) on 127.0.5.x, release build.

  cluster/bench-membership [--sizes 3,5,50] [--kills 10] [--loss-seconds 300] [--loss-sizes 3,5]

For each size: idle cost per peer (RSS, CPU, bytes/s), then kill -9 one node at a time and time until every
other node's log says "member dead" for it (median, p90, max), then restart it. Then 30 % random packet loss
on every link (iptables statistic, both directions) for --loss-seconds on each loss size: counts false deaths
and suspicions. Prints numbers; docs/benchmarks.md has the write-up.
"""
import argparse, datetime, json, os, statistics, subprocess, sys, time

from .base import ROOT, RUN_DIR, cpu_seconds

BIN = os.environ.get("PEER_BIN", os.path.join(ROOT, ".build/release"))
PREFIX = "127.0.5."
DIR = os.path.join(RUN_DIR, "bench-membership")
TAG = "peer-bench-membership"
ENV = dict(os.environ, PEER_BIN=BIN, MESH_PREFIX=PREFIX)


def mesh(*args, check=True):
    r = subprocess.run([os.path.join(ROOT, "cluster/testbed-mesh"), *args], env=ENV, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"cluster/testbed-mesh {' '.join(args)} failed: {r.stdout}{r.stderr}")
    return r.stdout


def members(node):
    out = subprocess.run([os.path.join(BIN, "peerctl"), "members", "--config", f"{DIR}/{node}/peer.yml", "--json"],
                         capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else None


def all_alive(nodes, observers):
    for o in observers:
        m = members(o)
        if not m or any(x["status"] != "alive" for x in m["members"] if x["name"] in nodes):
            return False
    return True


def wait(cond, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def log_events(node, msg):
    out = []
    try:
        with open(f"{DIR}/{node}/peerd.log") as f:
            for line in f:
                if f'"msg":"{msg}"' not in line:
                    continue
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                ts = datetime.datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp()
                out.append((ts, e.get("member.name")))
    except FileNotFoundError:
        pass
    return out


def pid(node):
    with open(f"{DIR}/{node}/pid") as f:
        return int(f.read())


def rss_mib(p):
    with open(f"/proc/{p}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def firewall(add, rule):
    subprocess.run(["iptables", "-I" if add else "-D", "INPUT", *rule, "-m", "comment", "--comment", TAG], check=add)


def bench_size(n, kills):
    print(f"\n== {n} peers ==", flush=True)
    mesh("up", str(n), DIR)
    started = time.time()
    nodes = [f"m{i}" for i in range(1, n + 1)]
    observers = nodes if n <= 5 else nodes[:3] + nodes[-2:]
    if not wait(lambda: all_alive(nodes, observers), 60):
        sys.exit("the mesh did not converge")
    # Idle means after peerd's first release of its start-up pages (30 s after it starts).
    time.sleep(max(5, started + 35 - time.time()))
    t_converged = time.time()
    # Idle cost over 10 s.
    pids = {x: pid(x) for x in nodes}
    before = {x: cpu_seconds(p) for x, p in pids.items()}
    sent0 = {x: members(x)["bytesSent"] for x in observers}
    t0 = time.time()
    time.sleep(10)
    dt = time.time() - t0
    cpu = [100 * (cpu_seconds(p) - before[x]) / dt for x, p in pids.items()]
    rss = [rss_mib(p) for p in pids.values()]
    sent = [(members(x)["bytesSent"] - sent0[x]) / dt for x in observers]
    print(f"idle per peer: RSS median {statistics.median(rss):.1f} MiB (max {max(rss):.1f}); "
          f"CPU median {statistics.median(cpu):.2f}% of a core (max {max(cpu):.2f}%); "
          f"sent {statistics.median(sent) / 1024:.1f} KiB/s (datagrams, sealed)", flush=True)

    # kill -9 → dead everywhere.
    per_node, worst = [], []
    faults = []  # (victim, start, end): deaths of the victim, and deaths seen by an isolated victim, are expected
    for k in range(kills):
        victim = nodes[1 + k % (n - 1)]
        others = [x for x in nodes if x != victim]
        t_kill = time.time()
        mesh("kill", victim, DIR)
        def declared():
            return all(any(ts >= t_kill and who == victim for ts, who in log_events(o, "member dead")) for o in others)
        ok = wait(declared, 20)
        times = []
        for o in others:
            ts = [t for t, who in log_events(o, "member dead") if t >= t_kill and who == victim]
            if ts:
                times.append(min(ts) - t_kill)
        per_node += times
        if times:
            worst.append(max(times))
        print(f"  kill {k + 1}: {victim} dead at {len(times)}/{len(others)} nodes, "
              f"first {min(times):.3f}s, last {max(times):.3f}s{'' if ok else ' (INCOMPLETE)'}", flush=True)
        mesh("start", victim, DIR)
        wait(lambda: all_alive(nodes, observers), 30)
        faults.append((victim, t_kill, time.time()))
        time.sleep(1)
    print(f"kill -9 → declared dead: per observer median {statistics.median(per_node):.3f}s, "
          f"p90 {pct(per_node, 0.9):.3f}s; by every node: median {statistics.median(worst):.3f}s, max {max(worst):.3f}s", flush=True)
    # Power loss / network loss: the victim's packets are dropped, nothing closes; found by probes alone.
    silent = []
    for k in range(min(3, kills)):
        victim = nodes[1 + k % (n - 1)]
        others = [x for x in nodes if x != victim]
        rules = [["-s", PREFIX + victim[1:], "-j", "DROP"], ["-d", PREFIX + victim[1:], "-j", "DROP"]]
        t_cut = time.time()
        for r in rules:
            firewall(True, r)
        try:
            wait(lambda: all(any(ts >= t_cut and who == victim for ts, who in log_events(o, "member dead")) for o in others), 20)
        finally:
            for r in rules:
                firewall(False, r)
        times = [min([t for t, who in log_events(o, "member dead") if t >= t_cut and who == victim] or [float("nan")]) - t_cut for o in others]
        silent.append(max(times))
        faults.append((victim, t_cut, time.time() + 30))
        print(f"  isolate {victim}: dead everywhere after {max(times):.3f}s", flush=True)
        wait(lambda: all_alive(nodes, observers), 30)
        faults[-1] = (victim, t_cut, time.time())
        time.sleep(1)
    print(f"isolated (no connection closes) → dead everywhere: median {statistics.median(silent):.3f}s, max {max(silent):.3f}s")
    def expected(observer, member, ts):
        # The victim itself may see others die while it is cut off or just restarted (until it has handshakes).
        return any(start <= ts <= end and member == v or start <= ts <= end + 10 and observer == v for v, start, end in faults)
    false = sum(1 for o in nodes for ts, who in log_events(o, "member dead") if ts >= t_converged and not expected(o, who, ts))
    print(f"deaths not caused by a kill or an isolation: {false}")
    mesh("down", DIR)


def bench_loss(n, seconds):
    print(f"\n== {n} peers, 30% packet loss on every link for {seconds}s ==", flush=True)
    mesh("up", str(n), DIR)
    nodes = [f"m{i}" for i in range(1, n + 1)]
    if not wait(lambda: all_alive(nodes, nodes), 60):
        sys.exit("the mesh did not converge")
    rule = ["-s", PREFIX + "0/24", "-d", PREFIX + "0/24", "-m", "statistic", "--mode", "random", "--probability", "0.3", "-j", "DROP"]
    t0 = time.time()
    firewall(True, rule)
    try:
        time.sleep(seconds)
    finally:
        firewall(False, rule)
    deaths = sum(1 for o in nodes for ts, _ in log_events(o, "member dead") if ts >= t0)
    suspicions = sum(1 for o in nodes for ts, _ in log_events(o, "member suspect") if ts >= t0)
    print(f"false deaths: {deaths}; suspicions raised (and refuted): {suspicions}", flush=True)
    mesh("down", DIR)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="3,5,50")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--loss-seconds", type=int, default=300)
    ap.add_argument("--loss-sizes", default="3,5")
    a = ap.parse_args()
    if not (os.access(os.path.join(BIN, "peerd"), os.X_OK) and os.access(os.path.join(BIN, "peerctl"), os.X_OK)):
        print("building release peerd and peerctl", flush=True)
        subprocess.run(["swift", "build", "-c", "release", "--product", "peerd"], cwd=ROOT, check=True)
        subprocess.run(["swift", "build", "-c", "release", "--product", "peerctl"], cwd=ROOT, check=True)
    print(f"binaries: {BIN}; {os.cpu_count()} cores")
    try:
        for n in [int(x) for x in a.sizes.split(",") if x]:
            bench_size(n, a.kills)
        for n in [int(x) for x in a.loss_sizes.split(",") if x]:
            bench_loss(n, a.loss_seconds)
    finally:
        mesh("down", DIR, check=False)

