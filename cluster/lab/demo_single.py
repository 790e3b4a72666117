"""The one-node demo: one node on 127.0.0.2 (DEMO_ADDRESS) with its own nginx and peerd, under light load,
deploying v1, then v2, then a broken image (refused, v2 keeps serving), then rolling back. Everything it starts for
the node is stopped at the end; dockerd and the registry stay up for the next run (cluster/testbed down stops them)."""
import os, shutil, subprocess, threading, time, urllib.error, urllib.request

from . import node, testbed
from .base import DEBUG_BIN, TESTAPP_REPO, build, die, log, wait

ADDRESS = os.environ.get("DEMO_ADDRESS", "127.0.0.2")
NAME = "demo"


def say(text):
    print(f"\n\033[1;36m### {text}\033[0m", flush=True)


def show(*args):
    print(f"\033[2m$ {' '.join(args)}\033[0m", flush=True)
    return subprocess.run(args).returncode


def get(path="/"):
    try:
        with urllib.request.urlopen(f"http://{ADDRESS}{path}", timeout=5) as r:
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError as e:
        return None, str(e)


class Load(threading.Thread):
    """A client that requests / every 20 ms and records every status (None: no answer)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.statuses, self.stopping = [], threading.Event()

    def run(self):
        while not self.stopping.is_set():
            self.statuses.append(get()[0])
            time.sleep(0.02)


def main():
    testbed.services_up()
    log("building peerd and peerctl (the first build takes a few minutes)")
    build("peerd", "peerctl")
    d = node.node_dir(NAME)
    config = f"{d}/peer.yml"
    peerctl = lambda *args: show(f"{DEBUG_BIN}/peerctl", *args, "--config", config)  # noqa: E731
    peerd, load = None, None

    def cleanup():
        if load:
            load.stopping.set()
        if peerd and peerd.poll() is None:
            peerd.terminate()
            peerd.wait()
        node.nginx_down(NAME)
        node.remove_containers(f"dev.peer.node={NAME}")

    cleanup()
    shutil.rmtree(d, ignore_errors=True)
    node.write_files(NAME, ADDRESS, 80, health_timeout="5s")
    try:
        node.nginx_up(NAME)
    except SystemExit:
        die(f"nginx could not listen on {ADDRESS}:80 (is something else on port 80 of every address? stop it, "
            "or set DEMO_ADDRESS)")
    try:
        say(f"Starting peerd for node '{NAME}' ({ADDRESS}); its nginx listens on {ADDRESS}:80")
        with open(f"{d}/peerd.log", "w") as out:
            peerd = subprocess.Popen([f"{DEBUG_BIN}/peerd", "--config", config, "--log-level", "warning"], stdout=out,
                                     stderr=out)
        status = lambda: subprocess.run([f"{DEBUG_BIN}/peerctl", "status", "--config", config],  # noqa: E731
                                        capture_output=True).returncode == 0
        if not wait(status, 10, step=0.1):
            die(f"peerd did not answer on its control socket (log: {d}/peerd.log)")
        show("cat", config)

        say("Deploy v1 (nothing runs yet)")
        if peerctl("deploy", f"{TESTAPP_REPO}:v1") != 0:
            die(f"the first deploy failed (log: {d}/peerd.log)")
        print(get()[1])

        say(f"Light load from now on: a client requests {ADDRESS}/ every 20 ms and records every status")
        load = Load()
        load.start()
        wait(lambda: len(load.statuses) >= 10, 5)

        say("Deploy v2: health-gated blue/green swap, old container drained, then stopped")
        if peerctl("deploy", f"{TESTAPP_REPO}:v2") != 0:
            die(f"the deploy of v2 failed (log: {d}/peerd.log)")
        print(get()[1])

        say("Deploy a broken image (its /health never answers 200): refused, v2 keeps serving")
        peerctl("deploy", f"{TESTAPP_REPO}:bad")
        print(get()[1])

        say("Roll back to the previous image")
        if peerctl("rollback") != 0:
            die(f"the rollback failed (log: {d}/peerd.log)")
        print(get()[1])

        say("Status and history")
        peerctl("status")
        peerctl("deploys")

        load.stopping.set()
        load.join()
        total, ok = len(load.statuses), sum(1 for s in load.statuses if s and 200 <= s < 300)
        running = subprocess.run(["docker", "ps", "-q", "--filter", f"label=dev.peer.node={NAME}"], capture_output=True,
                                 text=True).stdout.split()
        say("Summary")
        for label, value in (("requests during the deploys", total), ("answered 2xx", ok),
                             ("anything else (failed requests)", total - ok), ("serving now", get()[1]),
                             ("containers of peer's running", len(running))):
            print(f"{label:<34} {value}")
        print("\nThe node (peerd, nginx, containers) stops now. dockerd and the registry stay up: cluster/testbed down "
              "stops them.")
    finally:
        cleanup()
