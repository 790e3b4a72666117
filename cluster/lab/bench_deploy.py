"""Benchmark: N consecutive deploys under load, peer's swap vs. the naive approach, same machine, same load.

  cluster/bench-deploy [DEPLOYS=10]      PEER_BIN (default .build/release), NAIVE_SLEEP (10), SKIP_IMAGES=1

Load: wrk, 10 connections on a fast page and 10 on a 1 s request, for the whole run, and a control client with a
new connection per request. Prints non-2xx responses, socket errors and deploy wall times for both approaches."""
import json, os, re, shutil, statistics, subprocess, time

from . import node, testbed
from .base import ROOT, RUN_DIR, TESTAPP_REPO, build, die, log, wait

ADDRESS = "127.0.0.10"
NAME = "bench"


class Load:
    """wrk for as long as the deploys take: 10 connections on /, 10 on a 1 s request, 4 with Connection: close."""

    def __init__(self, out):
        self.out, self.procs = out, []
        for suffix, args in (("fast", ["-c10", f"http://{ADDRESS}/"]),
                             ("slow", ["-c10", f"http://{ADDRESS}/cgi-bin/slow?1"]),
                             ("close", ["-c4", "-H", "Connection: close", f"http://{ADDRESS}/"])):
            with open(f"{out}.{suffix}", "w") as f:
                self.procs.append(subprocess.Popen(["wrk", "-t1", "-d600s", "--timeout", "5s", *args], stdout=f,
                                                   stderr=subprocess.STDOUT))
        time.sleep(2)  # the load runs before the first deploy (a measurement window, not a wait for a condition)

    def stop(self):
        time.sleep(2)  # and after the last one
        for p in self.procs:
            p.send_signal(2)
        for p in self.procs:
            p.wait()


def summarize(*paths):
    """(requests, non-2xx, socket errors: connect + read + write + timeout) over wrk outputs."""
    requests = bad = errors = 0
    for path in paths:
        for line in open(path):
            if "requests in" in line:
                requests += int(line.split()[0])
            elif "Non-2xx or 3xx responses:" in line:
                bad += int(line.split()[-1])
            elif "Socket errors:" in line:
                errors += sum(int(n) for n in re.findall(r"\d+", line))
    return requests, bad, errors


def main(args):
    deploys = int(args[0]) if args else 10
    naive_sleep = float(os.environ.get("NAIVE_SLEEP", "10"))
    bin_dir = os.environ.get("PEER_BIN", os.path.join(ROOT, ".build/release"))
    testbed.services_up(images=os.environ.get("SKIP_IMAGES") != "1")
    if not os.access(f"{bin_dir}/peerd", os.X_OK):
        log("building release binaries")
        build("peerd", "peerctl", config="release")
    d = node.node_dir(NAME)
    config = f"{d}/peer.yml"
    results = os.path.join(RUN_DIR, "bench-deploy")
    os.makedirs(results, exist_ok=True)
    peerd = None
    loads = []

    def peerctl(*a, out=None):
        r = subprocess.run([f"{bin_dir}/peerctl", *a, "--config", config], capture_output=True, text=True)
        if out:
            open(out, "w").write(r.stdout + r.stderr)
        return r

    def cleanup():
        for p in (p for load in loads for p in load.procs):
            if p.poll() is None:
                p.kill()
        if peerd and peerd.poll() is None:
            peerd.terminate()
            peerd.wait()
        node.nginx_down(NAME)
        node.remove_containers(f"dev.peer.node={NAME}")
        node.remove_containers("bench.naive=1")

    cleanup()
    shutil.rmtree(d, ignore_errors=True)
    node.write_files(NAME, ADDRESS, 80)
    node.nginx_up(NAME)
    try:
        # ---- peer ----
        with open(f"{results}/peerd.log", "w") as out:
            peerd = subprocess.Popen([f"{bin_dir}/peerd", "--config", config, "--log-level", "warning"], stdout=out,
                                     stderr=out)
        wait(lambda: os.path.exists(f"{d}/run/peerd.sock"), 5, step=0.1)
        r = peerctl("deploy", f"{TESTAPP_REPO}:v1")
        if r.returncode != 0:
            die(f"first deploy failed: {r.stdout}{r.stderr}")
        log(f"peer: {deploys} deploys under load")
        load = Load(f"{results}/peer")
        loads.append(load)
        for i in range(1, deploys + 1):
            r = peerctl("deploy", f"{TESTAPP_REPO}:{'v2' if i % 2 else 'v1'}", out=f"{results}/peer-deploy-{i}.log")
            if r.returncode != 0:
                load.stop()
                die(f"deploy {i} failed: {(r.stdout + r.stderr).strip()[-300:]}")
        load.stop()
        history = json.loads(peerctl("deploys", "--json").stdout)
        rss_kb = next(int(l.split()[1]) for l in open(f"/proc/{peerd.pid}/status") if l.startswith("VmRSS"))
        peerd.terminate()
        peerd.wait()
        peer = summarize(f"{results}/peer.fast", f"{results}/peer.slow")
        done = [r for r in history if r["result"] == "succeeded"][-deploys:]
        p_serving = statistics.median(r["servingAfterMs"] for r in done) / 1000
        p_total = statistics.median(r["durationMs"] for r in done) / 1000

        # ---- naive: fixed sleep, reload, stop the old container at once ----
        node.remove_containers(f"dev.peer.node={NAME}")
        site = f"{d}/nginx/sites/peer-testapp.conf"

        def route(container):
            port = testbed.docker("port", container, "8080/tcp").splitlines()[0].rsplit(":", 1)[1]
            with open(site, "w") as f:
                f.write(f"upstream naive {{ server 127.0.0.1:{port}; }}\n"
                        f"server {{ listen {ADDRESS}:80; server_name testapp.local; location / {{ proxy_pass http://naive; }} }}\n")
            node.nginx_reload(NAME)

        def run(tag):
            return testbed.docker("run", "-d", "-l", "bench.naive=1", "-p", "127.0.0.1::8080", f"{TESTAPP_REPO}:{tag}").strip()

        old = run("v1")
        time.sleep(naive_sleep)  # the naive approach: a fixed sleep instead of a health check
        route(old)
        time.sleep(1)
        log(f"naive: {deploys} deploys under load (sleep {naive_sleep:g} s instead of a health check)")
        load = Load(f"{results}/naive")
        loads.append(load)
        naive_times = []
        for i in range(1, deploys + 1):
            tag = "v2" if i % 2 else "v1"
            t0 = time.monotonic()
            testbed.docker("pull", "-q", f"{TESTAPP_REPO}:{tag}")
            new = run(tag)
            time.sleep(naive_sleep)
            route(new)
            naive_times.append(time.monotonic() - t0)
            testbed.docker("rm", "-f", old)
            old = new
        load.stop()
        naive = summarize(f"{results}/naive.fast", f"{results}/naive.slow")
        n_serving = statistics.median(naive_times)

        print(f"\nbench-deploy: {deploys} deploys under load (wrk 10 conns on /, 10 conns on a 1 s request), "
              f"{os.cpu_count()} cores")
        row = "{:<8} {:>10} {:>10} {:>14} {:>22} {:>18}"
        print(row.format("approach", "requests", "non-2xx", "socket-errors", "median to-serving (s)", "median deploy (s)"))
        print(row.format("peer", *peer, f"{p_serving:.3f}", f"{p_total:.3f}"))
        print(row.format("naive", *naive, f"{n_serving:.3f}", f"{n_serving:.3f}"))
        for approach in ("peer", "naive"):
            c = summarize(f"{results}/{approach}.close")
            print(f"control ({approach}, Connection: close, 4 conns): {c[0]} requests, {c[1]} non-2xx, {c[2]} socket errors")
        print(f"peerd RSS after the run: {rss_kb // 1024} MiB")
        print(f"raw wrk output and logs: {results}")
        for approach in ("peer", "naive"):
            for suffix in ("fast", "slow", "close"):
                for line in open(f"{results}/{approach}.{suffix}"):
                    if "Socket errors" in line:
                        print(f"  {approach}.{suffix}: {line.strip()}")
    finally:
        cleanup()
