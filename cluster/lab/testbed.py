"""The single-machine test bed: Debian packages, dockerd (vfs), a registry on 127.0.0.1:5000, a second registry
that requires a login on 127.0.0.1:5001, and the test app images (FROM scratch, from busybox-static)."""
import base64, http.client, os, shutil, socket, subprocess, sys, tarfile, urllib.error, urllib.request

from .base import CLUSTER_DIR, DOCKER_SOCK, REGISTRY, RUN_DIR, TESTAPP_REPO, die, log, wait

AUTH_REGISTRY = os.environ.get("PEER_AUTH_REGISTRY", "127.0.0.1:5001")
AUTH_REGISTRY_USER = "peer"
AUTH_REGISTRY_PASSWORD = "testbed-secret"
TAGS = {  # tag: the test app's environment (cluster/testapp/start)
    "v1": ["VERSION=v1"],
    "v2": ["VERSION=v2"],
    "v3": ["VERSION=v3"],
    "bad": ["VERSION=bad", "HEALTH=fail"],  # /health never passes
    "crash": ["VERSION=crash", "CRASH=1"],  # exits at once
    "slowstart": ["VERSION=slowstart", "START_DELAY=3"],  # listens after 3 s
    "crashlater": ["VERSION=crashlater", "START_DELAY=1", "CRASH=1"],  # exits with 3 after 1 s
}


def static_busybox():
    """/bin/busybox is the static one, with httpd (the test app image is FROM scratch)."""
    if not os.access("/bin/busybox", os.X_OK):
        return False
    linkage = subprocess.run(["ldd", "/bin/busybox"], capture_output=True, text=True)
    if "not a dynamic" not in linkage.stdout + linkage.stderr:
        return False
    return subprocess.run(["/bin/busybox", "httpd", "--help"], capture_output=True).returncode == 0


def need_packages():
    """Installs the Debian packages the test bed needs (as root), found missing by the command each provides."""
    missing = [package for command, package in (("dockerd", "docker.io"), ("docker-registry", "docker-registry"),
                                                ("nginx", "nginx-light"), ("wrk", "wrk"), ("iptables", "iptables"),
                                                ("curl", "curl"), ("openssl", "openssl"))
               if shutil.which(command) is None]
    if not static_busybox():
        missing.append("busybox-static")
    if not missing:
        return
    if os.geteuid() != 0:
        die(f"missing packages: {' '.join(missing)} (run as root, or: sudo apt-get install {' '.join(missing)})")
    log(f"installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, stdout=subprocess.DEVNULL)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("docker", timeout=2)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(2)
        self.sock.connect(self.socket_path)


def docker_answers():
    try:
        connection = _UnixHTTPConnection(DOCKER_SOCK)
        connection.request("GET", "/_ping")
        return connection.getresponse().status == 200
    except OSError:
        return False


def registry_status(address, login=None):
    """The HTTP status of the registry's /v2/ (200 open, 401 login required), or None when nothing answers.
    `login`: (user, password) to send."""
    request = urllib.request.Request(f"http://{address}/v2/")
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def _daemon(args, log_path):
    """Starts a service in its own session: it outlives the program that started it."""
    os.makedirs(RUN_DIR, exist_ok=True)
    with open(log_path, "w") as out:
        subprocess.Popen(args, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)


def docker_up():
    if docker_answers():
        return
    log("starting dockerd (vfs storage driver)")
    log_path = os.path.join(RUN_DIR, "dockerd.log")
    _daemon(["dockerd", "--storage-driver=vfs", f"--host=unix://{DOCKER_SOCK}"], log_path)
    if not wait(docker_answers, 30, step=0.2):
        sys.stderr.write("".join(open(log_path).readlines()[-20:]))
        die(f"dockerd did not answer on {DOCKER_SOCK} within 30 s (log: {log_path})")


def _registry_up(address, name, expected, extra=""):
    if registry_status(address) == expected:
        return
    storage = os.path.join(RUN_DIR, name)
    os.makedirs(storage, exist_ok=True)
    config = os.path.join(RUN_DIR, f"{name}.yml")
    with open(config, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n"
                f"  delete:\n    enabled: true\nhttp:\n  addr: {address}\n{extra}")
    log(f"starting {name} on {address}")
    log_path = os.path.join(RUN_DIR, f"{name}.log")
    _daemon(["docker-registry", "serve", config], log_path)
    if not wait(lambda: registry_status(address) == expected, 10, step=0.1):
        die(f"{name} did not answer on {address} (log: {log_path})")


def registry_up():
    _registry_up(REGISTRY, "registry", 200)


def auth_registry_up():
    """A second registry that requires a login (htpasswd), for the "registry refuses auth" tests."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    if registry_status(AUTH_REGISTRY) == 401:
        if registry_status(AUTH_REGISTRY, login=(AUTH_REGISTRY_USER, AUTH_REGISTRY_PASSWORD)) == 200:
            return
        die(f"{AUTH_REGISTRY} answers but refuses this test bed's login: a registry of another run (another clone's "
            "cluster/.run) holds the port; stop it (pkill -f auth-registry.yml) and run again")
    htpasswd = os.path.join(RUN_DIR, "auth-registry.htpasswd")
    os.makedirs(RUN_DIR, exist_ok=True)
    with open(htpasswd, "w") as f:
        f.write(f"{AUTH_REGISTRY_USER}:{crypt.crypt(AUTH_REGISTRY_PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
    _registry_up(AUTH_REGISTRY, "auth-registry", 401,
                 f"auth:\n  htpasswd:\n    realm: peer-testbed\n    path: {htpasswd}\n")


def docker(*args, stdin=None):
    r = subprocess.run(["docker", *args], input=stdin, capture_output=True)
    if r.returncode != 0:
        die(f"docker {' '.join(args)}: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout.decode()


def auth_registry_push():
    """Pushes the test app v1 to the login registry as private-app:v1."""
    private = f"{AUTH_REGISTRY}/private-app:v1"
    docker("tag", f"{TESTAPP_REPO}:v1", private)
    docker("login", "-u", AUTH_REGISTRY_USER, "--password-stdin", AUTH_REGISTRY, stdin=AUTH_REGISTRY_PASSWORD.encode())
    docker("push", "-q", private)
    docker("logout", AUTH_REGISTRY)
    docker("rmi", private)


def build_images():
    """The test app images, one layer each (the same root file system, a different environment per tag), pushed
    to the local registry: there is no public registry here."""
    rootfs = os.path.join(RUN_DIR, "testapp-rootfs.tar")
    os.makedirs(RUN_DIR, exist_ok=True)
    with tarfile.open(rootfs, "w") as tar:
        def directory(name, mode):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        for name, mode in (("bin", 0o755), ("app", 0o755), ("tmp", 0o1777)):
            directory(name, mode)
        tar.add("/bin/busybox", "bin/busybox")
        applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        start = tar.gettarinfo(os.path.join(CLUSTER_DIR, "testapp/start"), "app/start")
        start.mode = 0o755
        with open(os.path.join(CLUSTER_DIR, "testapp/start"), "rb") as f:
            tar.addfile(start, f)
    with open(rootfs, "rb") as f:
        layer = f.read()
    for tag, env in TAGS.items():
        changes = [arg for kv in env for arg in ("--change", f"ENV {kv}")]
        docker("import", *changes, "--change", 'ENTRYPOINT ["/bin/sh", "/app/start"]', "--change", "EXPOSE 8080",
               "--change", "ENV PATH=/bin", "-", f"{TESTAPP_REPO}:{tag}", stdin=layer)
        docker("push", "-q", f"{TESTAPP_REPO}:{tag}")
    os.remove(rootfs)
    log(f"pushed {TESTAPP_REPO}:{{{','.join(TAGS)}}}")


def services_up(images=True):
    """What every program of the lab needs: the packages, dockerd, the registry and (by default) the images."""
    need_packages()
    docker_up()
    registry_up()
    if images:
        build_images()


def up():
    services_up()
    auth_registry_up()
    auth_registry_push()
    log(f"test bed ready: docker on {DOCKER_SOCK}, registry {REGISTRY}, images {TESTAPP_REPO}:{{{','.join(TAGS)}}}, "
        f"{AUTH_REGISTRY}/private-app:v1 (login {AUTH_REGISTRY_USER})")


def down():
    for name in ("registry", "auth-registry"):
        subprocess.run(["pkill", "-f", f"docker-registry serve {RUN_DIR}/{name}.yml"], capture_output=True)
    try:
        os.kill(int(open("/var/run/docker.pid").read().strip()), 15)
    except (OSError, ValueError):
        pass


def main(args):
    command = args[0] if args else "up"
    if command == "up":
        up()
    elif command == "down":
        down()
    else:
        die("usage: cluster/testbed up|down")
