"""The demo (the README's first command, cluster/demo): three peers on 127.0.0.2–4, each
with its own nginx and the test app, one mesh, the Cloudflare stand-in as DNS provider and notification sink on
127.0.0.1:8787. Narrates: a rolling deploy under light load, who leads, a node killed and taken out of DNS, back
in, the leader killed and replaced. Ends with a summary and stops everything it started."""
import os, threading, time, urllib.request

from . import testbed
from .base import DEBUG_BIN, RUN_DIR, build, log

os.environ.setdefault("PEER_CLUSTER_PREFIX", "127.0.0.")
os.environ.setdefault("PEER_CLUSTER_OFFSET", "1")
os.environ.setdefault("PEER_CLUSTER_DIR", os.path.join(RUN_DIR, "demo"))
os.environ["PEER_BIN"] = DEBUG_BIN
from .cluster import *  # noqa: E402,F403

REPO = os.environ.get("PEER_REGISTRY", "127.0.0.1:5000") + "/peer-testapp"


def say(text):
    print(f"\n\033[1;36m### {text}\033[0m", flush=True)


def run(*args, node="f1"):
    line = " ".join(["peerctl", *args])
    print(f"\033[2m$ {line}   # on {node}\033[0m", flush=True)
    r = sh(f"{BIN}/peerctl", *args, "--config", f"{node_dir(node)}/peer.yml", check=False)
    print(r.stdout.rstrip() or r.stderr.rstrip(), flush=True)
    return r


def records():
    return sorted(r["content"] for r in state()["records"] if r["name"] == NAME)


def notifications():
    return [n["title"] for n in state()["notifications"]]


class Load(threading.Thread):
    """A client that asks every node for / every 20 ms and records every answer."""
    def __init__(self):
        super().__init__(daemon=True)
        self.ok, self.failed, self.stopped = 0, 0, False
        self.down = set()

    def run(self):
        while not self.stopped:
            for n in NODES:
                if n in self.down:
                    continue
                req = urllib.request.Request(f"http://{addr(n)}:8080/", headers={"Host": NAME})
                try:
                    with urllib.request.urlopen(req, timeout=5) as r:
                        self.ok += 1 if 200 <= r.status < 300 else 0
                except Exception:
                    self.failed += 1
            time.sleep(0.02)


def main():
    testbed.services_up()
    log("building peerd, peerctl and the Cloudflare stand-in (the first build takes a few minutes)")
    build("peerd", "peerctl", "peer-stub")
    load = Load()
    try:
        say("Three peers on 127.0.0.2–4: certificates from peerctl, nginx and peerd on each, DNS at the stand-in")
        up()
        wait(lambda: len(records()) == 3, 30)
        print(f"DNS records for {NAME}: {records()}")
        run("who")
        run("status", node="f2")

        say("Light load from now on: a client asks every node for / every 20 ms")
        load.start()
        time.sleep(1)

        say("Rolling deploy of v2 from node f3: one node at a time, each a health-gated blue/green swap")
        run("deploy", f"{REPO}:v2", node="f3")

        say("A broken image (its health check never passes): stopped at the first node, nobody serves it")
        run("deploy", f"{REPO}:bad", node="f2")

        lead = leader()
        victim = next(n for n in NODES if n != lead)
        say(f"kill -9 the peerd of {victim} and stop its nginx: the leader ({lead}) takes it out of DNS")
        load.down.add(victim)
        kill(victim)
        sh("kill", "-QUIT", open(f"{node_dir(victim)}/nginx/nginx.pid").read().strip(), check=False)
        t0 = time.time()
        wait(lambda: addr(victim) not in records(), 15)
        print(f"record of {victim} removed after {time.time() - t0:.1f}s; DNS now {records()}")
        wait(lambda: any(victim in t for t in notifications()), 5)
        print(f"notification: {[t for t in notifications() if victim in t][-1:]}")
        run("members", node=lead)

        say(f"{victim} comes back: alive again, its record returns after the hold-down")
        sh("nginx", "-p", f"{node_dir(victim)}/nginx", "-c", f"{node_dir(victim)}/nginx/nginx.conf", "-e", f"{node_dir(victim)}/nginx/logs/error.log")
        start(victim)
        load.down.discard(victim)
        wait(lambda: len(records()) == 3, 30)
        print(f"DNS now {records()}")

        lead = leader()
        say(f"kill -9 the leader ({lead}): another node takes the lease under a higher term")
        t0 = time.time()
        kill(lead)
        others = [n for n in NODES if n != lead]
        wait(lambda: leader() in others, 15)
        print(f"new leader after {time.time() - t0:.1f}s")
        run("who", node=others[0])
        start(lead)
        wait(lambda: len(records()) == 3, 30)

        load.stopped = True
        time.sleep(0.2)
        say("Summary")
        rows = [
            ("requests during the demo", load.ok + load.failed),
            ("answered 2xx", load.ok),
            ("failed (nodes that were up)", load.failed),
            ("DNS records now", ", ".join(records())),
            ("Cloudflare API calls", state()["calls"]),
            ("notifications sent", len(notifications())),
            ("leader now", leader()),
        ]
        for k, v in rows:
            print(f"{k:<34} {v}")
        print("\nEverything the demo started for the nodes stops now; dockerd and the registry stay up (cluster/testbed down).")
    finally:
        load.stopped = True
        down()



