"""Paths, logging, running commands and waiting: what every lab program uses."""
import os, subprocess, sys, time

CLUSTER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(CLUSTER_DIR)
RUN_DIR = os.environ.get("PEER_RUN_DIR", os.path.join(CLUSTER_DIR, ".run"))
REGISTRY = os.environ.get("PEER_REGISTRY", "127.0.0.1:5000")
TESTAPP_REPO = f"{REGISTRY}/peer-testapp"
DOCKER_SOCK = os.environ.get("DOCKER_HOST_SOCK", "/var/run/docker.sock")
DEBUG_BIN = os.path.join(ROOT, ".build/debug")


def log(text):
    print(f"\033[1m==> {text}\033[0m", file=sys.stderr, flush=True)


def die(text):
    sys.exit(f"error: {text}")


def sh(*args, check=True, **kw):
    """Runs a command, capturing its output as text; check=True raises on a non-zero exit."""
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


def run(*args, **kw):
    """Runs a command with its output going where ours goes; exits with its message if it fails."""
    r = subprocess.run(args, **kw)
    if r.returncode != 0:
        die(f"{' '.join(args)} exited with {r.returncode}")


def wait(cond, timeout, step=0.02):
    """Polls cond until it holds or timeout seconds pass; returns its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


def pid_from_file(path):
    """The pid in a pid file if that process runs (not exited and unreaped); None otherwise."""
    try:
        pid = int(open(path).read().strip())
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(") ", 1)[1].startswith("Z"):
                return None
        return pid
    except (OSError, ValueError, IndexError):
        return None


def cpu_seconds(pid):
    """CPU time (user + system) a process has used so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build(*products, config="debug", quiet=True):
    """swift build of these products (peerd, peerctl, peer-stub) in the repository."""
    for product in products:
        r = subprocess.run(["swift", "build", "-c", config, "--product", product], cwd=ROOT,
                           stdout=subprocess.DEVNULL if quiet else None)
        if r.returncode != 0:
            die(f"swift build -c {config} --product {product} failed")


def build_missing(bin_dir, config="debug", stub=False):
    """Builds peerd and peerctl into bin_dir (a .build/<config> folder) unless both are there, and the stand-in."""
    if not all(os.access(os.path.join(bin_dir, p), os.X_OK) for p in ("peerd", "peerctl")):
        log(f"building peerd and peerctl ({config})")
        build("peerd", "peerctl", config=config)
    if stub and not os.access(os.path.join(DEBUG_BIN, "peer-stub"), os.X_OK):
        log("building the Cloudflare stand-in (peer-stub)")
        build("peer-stub")
