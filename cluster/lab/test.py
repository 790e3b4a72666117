"""The test command (README): brings up the real test bed (dockerd, registries, nginx, test images) and runs every
test: unit, simulation, and integration tests against the real services and the real binaries.

  cluster/test                       everything: the format, the pure suites (in parallel), the suites with real
                                     processes (one test at a time), a short chaos run, the packaging checks
  cluster/test [swift test args]     only `swift test --no-parallel ARGS` (e.g. --filter MeshProcessTests)"""
import shutil, subprocess, sys

from . import testbed
from .base import CLUSTER_DIR, ROOT, log

REAL_PROCESSES = "IntegrationTests|TransportTests|PeerDaemonTests"


def step(*args):
    r = subprocess.run(args, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(args)}")


def main(args):
    testbed.up()
    # The code keeps the format of .swift-format (the formatter ships with the toolchain).
    if shutil.which("swift-format"):
        log("checking the format (swift-format lint --strict)")
        step("swift-format", "lint", "--strict", "-r", "Sources", "Tests")
    log("building (debug) peerd, peerctl and the tests")
    step("swift", "build", "--build-tests")
    log("running the tests")
    if args:
        step("swift", "test", "--skip-build", "--no-parallel", *args)
        return
    # The pure suites (the simulations are CPU-bound and share nothing) in parallel, on every core...
    step("swift", "test", "--skip-build", "--skip", REAL_PROCESSES)
    # ...then one test at a time those with real processes, sockets and timeouts: the integration tests share one
    # dockerd and two CPU cores, and their timeouts are meant for a machine that is not also running a second deploy.
    step("swift", "test", "--skip-build", "--no-parallel", "--filter", REAL_PROCESSES)
    # The whole run also has a short chaos run (cluster/up, fault, down with every check of cluster/fault-chaos) and
    # the release packaging, as a user installs it.
    log("a short chaos run")
    # A fixed set of rounds (the fourth deploys the broken image): what it covers does not depend on the machine.
    step(f"{CLUSTER_DIR}/fault-chaos", "--seed", "1", "--faults", "pause-leader,kill-follower,slow-provider,loss", "--minutes", "10")
    log("checking the packaging")
    step(f"{CLUSTER_DIR}/test-package")
