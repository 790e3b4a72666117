"""cluster/fault-chaos [--seed S] [--minutes M] [--rounds R] [--nodes N] [--faults F,F,…]: faults during repeated
rolling deploys under load.

Bounded: no round starts after M minutes (default 5) or R rounds (default: no limit), and every round is bounded
(the deploy 180 s, settling 90 s). `--faults` fixes the rounds: one per fault named (CI runs four, the fourth with
the broken image, so what it covers does not depend on the machine's speed).

Each round (chosen by the seed): a fault — kill -9 a follower or the leader, SIGSTOP a peerd or the leader, cut a
node off from the others, 30 % mesh packet loss on a node, a slow provider (batches commit 0.3–2.5 s after they
arrive: the slowest after the leader's client gave up on them — late commits), a record deleted by hand in the
"dashboard", or none — then a rolling deploy submitted to a node the fault does not touch (v2/v3 alternately; every fourth round a broken image, which must be stopped and undone), the fault
healed after 2–6 s, the deploy awaited and the cluster settled. All along: HTTP load on every node's nginx (a fresh
connection per request) and the DNS records at the Cloudflare stand-in read every 50 ms.

It fails (exit 1) unless, at the end:
  - no request got a non-2xx answer or no answer (nginx and the app serve through every one of these faults:
    a failure would be unexplained);
  - the record set was never empty: the result of every write the provider applied, read from its log (exact);
  - no DNS write was applied after a write of a higher term (the term is in the comments peer writes), nor made
    by a node after a higher term had begun (from the logs);
  - no orphan containers: every node runs exactly one container of peer's, the one nginx routes to;
  - every deploy ended done or rolled back (the broken ones rolled back), and every node serves the image of the
    last good deploy.
The same seed gives the same faults, nodes and images; timings vary with the machine.
"""
import argparse, collections, json, os, random, subprocess, sys, threading, time, urllib.request

from . import testbed
from .base import DEBUG_BIN, RUN_DIR, build_missing

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--seed", type=int, default=None)
parser.add_argument("--rounds", type=int, default=1000)
parser.add_argument("--minutes", type=float, default=5)
parser.add_argument("--nodes", type=int, default=3)
parser.add_argument("--faults", default=None,
                    help="a fixed list of faults, one per round (e.g. pause-leader,kill-follower,slow-provider,loss): as many "
                         "rounds as faults, the fourth with the broken image; the rest still comes from the seed")
options = parser.parse_args()
FAULTS = ["kill-follower", "kill-leader", "pause", "pause-leader", "isolate", "loss", "slow-provider", "hand-delete", "none"]
fixed = options.faults.split(",") if options.faults else None
if fixed:
    unknown = [f for f in fixed if f not in FAULTS]
    if unknown:
        parser.error(f"unknown faults {unknown}: choose from {', '.join(FAULTS)}")
    options.rounds = len(fixed)
seed = options.seed if options.seed is not None else random.SystemRandom().randrange(1, 100000)
os.environ["PEER_CLUSTER_NODES"] = str(options.nodes)
os.environ.setdefault("PEER_ROLLOUT_NODE_TIMEOUT", "60s")
os.environ.setdefault("PEER_CLUSTER_DIR", os.path.join(RUN_DIR, "chaos"))
os.environ.setdefault("PEER_BIN", DEBUG_BIN)
testbed.services_up()
build_missing(os.environ["PEER_BIN"], stub=True)
from .cluster import *  # noqa: E402,F403

rng = random.Random(seed)
REGISTRY = os.environ.get("PEER_REGISTRY", "127.0.0.1:5000")
image = lambda tag: f"{REGISTRY}/peer-testapp:{tag}"
stop = threading.Event()
answers = collections.Counter()
failures = []
records_seen = {"min": None, "zero_at": []}


def load(n):
    while not stop.is_set():
        request = urllib.request.Request(f"http://{addr(n)}:8080/", headers={"Host": NAME, "Connection": "close"})
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                r.read()
                answers[r.status] += 1
        except urllib.error.HTTPError as e:
            answers[e.code] += 1
            failures.append((time.time(), n, f"HTTP {e.code}"))
        except Exception as e:  # noqa: BLE001
            answers["error"] += 1
            failures.append((time.time(), n, repr(e)))


def watch_dns():
    while not stop.is_set():
        try:
            count = len(contents())
            records_seen["min"] = count if records_seen["min"] is None else min(records_seen["min"], count)
            if count == 0:
                records_seen["zero_at"].append(time.time())
        except OSError:
            pass
        time.sleep(0.05)


def serving(n):
    r = sh(f"{BIN}/peerctl", "status", "--json", "--config", f"{node_dir(n)}/peer.yml", check=False)
    return json.loads(r.stdout).get("serving") if r.returncode == 0 else None


def settled(expected):
    """Every peerd runs, sees every member alive, and every node serves `expected`."""
    for n in NODES:
        if not running(n):
            return False
        s = serving(n)
        if not s or s["image"] != expected:
            return False
    r = sh(f"{BIN}/peerctl", "members", "--json", "--config", f"{node_dir(NODES[0])}/peer.yml", check=False)
    return r.returncode == 0 and all(m["status"] == "alive" for m in json.loads(r.stdout)["members"])


def stub_post(path):
    urllib.request.urlopen(urllib.request.Request(STUB + path, method="POST"), timeout=5).read()


def apply(fault, target):
    if fault in ("kill-follower", "kill-leader"):
        kill(target)
    elif fault in ("pause", "pause-leader"):
        pause(target)
    elif fault == "slow-provider":
        stub_post(f"/_stub/commit-latency?ms={rng.randint(300, 2500)}")
    elif fault == "hand-delete":
        have = sorted(contents())
        if len(have) >= 2:
            stub_post(f"/_stub/hand-delete?name={NAME}&content={rng.choice(have)}")
    elif fault == "isolate":
        partition([[target], [n for n in NODES if n != target]])
    elif fault == "loss":
        loss(target, 30)


def undo(fault, target):
    if fault in ("kill-follower", "kill-leader"):
        start(target)
    elif fault in ("pause", "pause-leader"):
        resume(target)
    elif fault == "slow-provider":
        stub_post("/_stub/commit-latency?ms=0")
    elif fault in ("isolate", "loss"):
        heal()


print(f"chaos: seed {seed}, up to {options.minutes:g} minutes, {len(NODES)} nodes (cluster/fault-chaos --seed {seed} repeats the choices)")
up()
expected = IMAGE
if not wait(lambda: len(contents()) == len(NODES) and settled(expected), 60):
    sys.exit("the cluster did not settle after up")
threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in NODES for _ in range(2)]
threads.append(threading.Thread(target=watch_dns, daemon=True))
for t in threads:
    t.start()
started = time.time()
results = []
broken = False
tags = ["v2", "v3"]
try:
    for round_ in range(1, options.rounds + 1):
        if time.time() - started > options.minutes * 60:
            break
        fault = rng.choice(FAULTS)
        if fixed:
            fault = fixed[round_ - 1]
        lead = leader()
        if fault in ("kill-leader", "pause-leader"):
            target = lead or rng.choice(NODES)
        else:
            target = rng.choice([n for n in NODES if n != lead] or NODES)
        bad = round_ % 4 == 0
        tag = "crash" if bad else tags[round_ % 2]
        submit_to = rng.choice([n for n in NODES if n != target])
        hold = rng.uniform(2, 6)
        t0 = time.time()
        apply(fault, target)
        deploy = subprocess.Popen([f"{BIN}/peerctl", "deploy", image(tag), "--config", f"{node_dir(submit_to)}/peer.yml"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(hold)
        undo(fault, target)
        try:
            output, _ = deploy.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            deploy.kill()
            output, _ = deploy.communicate()
            results.append((round_, fault, target, tag, "TIMEOUT", time.time() - t0))
            print(f"round {round_}: {fault} {target}, deploy {tag} via {submit_to}: did not end in 180 s")
            broken = True
            break
        ok = deploy.returncode == 0
        if ok:
            expected = image(tag)
        outcome = "done" if ok else ("rolled back" if "FAILED" in output or "rolled back" in output else "failed")
        converged = wait(lambda: settled(expected), 90)
        results.append((round_, fault, target, tag, outcome if converged else outcome + ", NOT SETTLED", time.time() - t0))
        print(f"round {round_}: {fault:13} {target:4} deploy {tag:5} via {submit_to}: {outcome}{'' if converged else ', NOT SETTLED'} ({time.time() - t0:.1f} s)")
        if not converged:
            broken = True
            break
finally:
    stop.set()
    for t in threads:
        t.join(timeout=10)
    heal()
    for n in NODES:
        if running(n):
            try:
                resume(n)
            except (ProcessLookupError, TypeError):
                pass

# The checks.
problems = []
if fixed and len(results) < len(fixed):
    problems.append(f"only {len(results)} of the {len(fixed)} rounds named by --faults ran within {options.minutes:g} minutes")
non2xx = sum(v for k, v in answers.items() if k != 200)
total = sum(answers.values())
if non2xx:
    problems.append(f"{non2xx} of {total} requests failed: {failures[:5]}")
if records_seen["zero_at"]:
    problems.append(f"the record set was empty {len(records_seen['zero_at'])} times (sampled)")
# Exact: the record set after every write the provider applied, and the terms of those writes in order.
applied = [m for m in state()["mutations"] if m["call"] != "hand-delete"]
empty_after = [m for m in applied if not [r for r in m["after"] if r["name"] == NAME]]
if empty_after:
    problems.append(f"{len(empty_after)} writes left the name with no record")
out_of_order, highest = [], 0
for m in applied:
    term = m.get("term")
    if term is not None:
        if term < highest:
            out_of_order.append((m["at"], term, highest))
        highest = max(highest, term)
if out_of_order:
    problems.append(f"{len(out_of_order)} writes applied after a write of a higher term: {out_of_order[:3]}")
writes, stale = dns_writes_and_stale()
if stale:
    problems.append(f"{len(stale)} DNS writes under a stale term")
orphans = []
for n in NODES:
    names = sh("docker", "ps", "-a", "--filter", f"label=dev.peer.node={n}", "--format", "{{.Names}} {{.State}}").stdout.split("\n")
    names = [x for x in names if x]
    s = serving(n)
    if len(names) != 1 or not s or not names[0].startswith(s["containerName"] + " ") or not names[0].endswith("running"):
        orphans.append(f"{n}: {names} (nginx routes to {s and s['containerName']})")
if orphans:
    problems.append(f"orphan or missing containers: {orphans}")
bad_rounds = [r for r in results if (r[3] == "crash" and r[4] != "rolled back") or (r[3] != "crash" and r[4] != "done")]
if bad_rounds or broken or not results:
    problems.append(f"deploys that did not end as they should: {bad_rounds or results[-1:]}")
final = {n: (serving(n) or {}).get("image") for n in NODES}
if set(final.values()) != {expected}:
    problems.append(f"nodes serve {final}, expected {expected}")

print()
print(f"seed {seed}: {len(results)} rounds in {time.time() - started:.0f} s, {total} requests, {non2xx} failed")
print(f"DNS: {len(applied)} writes applied, {len(writes)} record changes logged, fewest records after any write "
      f"{min((len([r for r in m['after'] if r['name'] == NAME]) for m in applied), default='-')} (sampled {records_seen['min']}), "
      f"stale-term writes {len(stale) + len(out_of_order)}")
print(f"faults: {', '.join(f'{r[1]}({r[2]})' for r in results)}")
print(f"deploys: {', '.join(f'{r[3]}:{r[4]}' for r in results)}")
if os.environ.get("PEER_CHAOS_KEEP") is None:
    down()
if problems:
    print("FAILED:")
    for p in problems:
        print("  - " + p)
    sys.exit(1)
print("all checks passed")
