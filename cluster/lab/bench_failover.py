"""Failover benchmark: 3 real peerd (release build), each with its own nginx and the test app in dockerd, in one
mesh with real certificates; DNS at the Cloudflare stub (peer-stub, the test kit's stand-in) on 127.0.0.1:8787.

  cluster/bench-failover [--trials 5]

Measures: kill -9 a follower → its record deleted at the stub; kill -9 the leader → the first moment another
node holds the lease, and → the new leader's first write (the dead leader's record deleted at the stub: the
election, the 500 ms takeover quiet period, a listing, the voters' confirmation and the write). Checks over the whole run, from the stub's own record of
every mutation and the nodes' logs: API writes per change set, writes under a stale term, moments with zero
records for the name. Needs the test bed (cluster/testbed up).
"""
import argparse, statistics, sys, time

from .cluster import *  # noqa: F403

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5)
    a = ap.parse_args()
    try:
        up()
        all_addrs = {addr(n) for n in NODES}
        if not wait(lambda: contents() == all_addrs, 30):
            sys.exit(f"records never matched the nodes: {contents()}")
        print(f"binaries: {BIN}; 3 nodes, records for {NAME} at the stub: {sorted(contents())}", flush=True)

        removal, failover, first_write = [], [], []
        for t in range(a.trials):
            lead = leader()
            victim = next(n for n in NODES if n != lead)
            before = len(state()["mutations"])
            t0 = time.time()
            kill(victim)
            ok = wait(lambda: addr(victim) not in contents(), 15)
            muts = state()["mutations"][before:]
            gone = [m for m in muts if any(r["content"] == addr(victim) for r in m["deleted"])]
            if ok and gone:
                removal.append(gone[0]["at"] - t0)
                print(f"  kill -9 follower {victim}: record deleted after {removal[-1]:.3f}s", flush=True)
            start(victim)
            wait(lambda: contents() == all_addrs, 30)

            lead = leader()
            before_leader = len(state()["mutations"])
            t0 = time.time()
            kill(lead)
            got = wait(lambda: any(e["t"] >= t0 for n in NODES if n != lead for e in events(n, "this node leads")), 15)
            if got:
                first = min(e["t"] for n in NODES if n != lead for e in events(n, "this node leads") if e["t"] >= t0)
                failover.append(first - t0)
                print(f"  kill -9 leader {lead}: a new leader after {failover[-1]:.3f}s", flush=True)
            if wait(lambda: addr(lead) not in contents(), 15):
                gone = [m for m in state()["mutations"][before_leader:] if any(r["content"] == addr(lead) for r in m["deleted"])]
                if gone:
                    first_write.append(gone[0]["at"] - t0)
                    print(f"  kill -9 leader {lead}: its record deleted by the new leader after {first_write[-1]:.3f}s", flush=True)
            start(lead)
            wait(lambda: contents() == all_addrs, 30)

        s = state()
        writes = [m for m in s["mutations"]]
        zero = sum(1 for m in writes if not any(r["name"] == NAME for r in m["after"]))
        stale = len(dns_writes_and_stale()[1])
        changes = sum(len(m["deleted"]) + len(m["created"]) for m in writes)
        print(f"kill -9 follower → record deleted: median {statistics.median(removal):.3f}s, max {max(removal):.3f}s ({len(removal)} trials)")
        print(f"kill -9 leader → new leader: median {statistics.median(failover):.3f}s, max {max(failover):.3f}s")
        print(f"kill -9 leader → new leader's first write: median {statistics.median(first_write):.3f}s, max {max(first_write):.3f}s")
        print(f"API writes: {len(writes)} calls ({', '.join(sorted(set(m['call'] for m in writes)))}) for {changes} record changes; "
              f"all API calls incl. reads: {s['calls']}")
        print(f"writes under a stale term: {stale}; writes that left zero records: {zero}")
    finally:
        down()

