"""Checks the packaging as a user meets it (part of cluster/test):
  - deploy/package builds the tarball and the .deb; the binaries carry the Swift runtime (no /opt/swift);
  - from a clean folder: --version, peerctl init, then config check on what init wrote;
  - install.sh into a scratch root twice (idempotent: same files, modes 0700/0600), and its prerequisite messages
    when docker and nginx are missing (nothing installed then);
  - the systemd unit passes systemd-analyze verify;
  - the .deb's metadata and contents, and dpkg -i / dpkg -r.
A check that cannot run here (no systemd-analyze; not root; a peer package installed already) says SKIP and why;
in CI (PEER_CI=1, set by .ci/run) a skipped check fails.

  cluster/test-package [--debug|--release]   (default --debug: quick, same packaging)"""
import glob, os, re, shutil, subprocess, tempfile

from .base import ROOT, die, log

CLEAN_ENV = {"PATH": "/usr/bin:/bin"}


class Checks:
    def __init__(self):
        self.failures = 0

    def check(self, what, ok, detail=""):
        if ok:
            print(f"  ok   {what}", flush=True)
        else:
            print(f"  FAIL {what}", flush=True)
            for line in detail.strip().splitlines()[-20:]:
                print(f"       {line}")
            self.failures += 1

    def skip(self, what, why):
        if os.environ.get("PEER_CI") == "1":
            self.check(f"{what} (in CI nothing is skipped)", False, why)
        else:
            print(f"  SKIP {what}: {why}", flush=True)

    def command(self, what, *args, expect=0, contains=None, **kw):
        """Runs a command; the check holds when it exits with `expect` and its output contains `contains`."""
        r = subprocess.run(args, capture_output=True, text=True, **kw)
        output = r.stdout + r.stderr
        ok = r.returncode == expect and (contains is None or contains in output)
        self.check(what, ok, f"exit {r.returncode}\n{output}")
        return output


def tree(root):
    """Every path under root with its mode: what a second install.sh must leave the same."""
    out = []
    for folder, dirs, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, f) for f in files)]:
            out.append(f"{name} {oct(os.lstat(name).st_mode & 0o7777)}")
    return sorted(out)


def mode(path):
    return oct(os.stat(path).st_mode & 0o777)[2:]


def main(args):
    config = args[0] if args else "--debug"
    if config not in ("--debug", "--release"):
        die("usage: cluster/test-package [--debug|--release]")
    work = tempfile.mkdtemp(prefix="peer-package-test.")
    c = Checks()
    try:
        log(f"packaging ({config})")
        # In CI (a throwaway clone, after the tests) the test build's folder is reused: only the links differ.
        # Elsewhere the package builds in its own folder, so that the shared-runtime build of the tests stays
        # usable. (.ci/run sets PEER_PACKAGE_BUILD_PATH.)
        command = [f"{ROOT}/deploy/package", "--out", f"{work}/dist"]
        if config == "--debug":
            command.append("--debug")
        if os.environ.get("PEER_PACKAGE_BUILD_PATH"):
            command += ["--build-path", os.environ["PEER_PACKAGE_BUILD_PATH"]]
        if subprocess.run(command).returncode != 0:
            die("deploy/package failed")
        tarball = glob.glob(f"{work}/dist/peer-*-linux-*.tar.gz")[0]
        deb = glob.glob(f"{work}/dist/peer_*.deb")[0]
        version = re.search(r'static let version = "([^"]*)"', open(f"{ROOT}/Sources/Control/ControlAPI.swift").read())[1]

        log("the tarball, from a clean folder")
        clean = f"{work}/clean"
        os.makedirs(clean)
        subprocess.run(["tar", "-C", clean, "-xzf", tarball], check=True)
        pkg = glob.glob(f"{clean}/peer-*")[0]
        for f in ("bin/peerd", "bin/peerctl", "install.sh", "systemd/peerd.service", "peer.example.yml",
                  "nginx/peer-site.conf.example", "docs/getting-started.md", "completions/peerctl.bash", "man/peerctl.1",
                  "man/peerd.8"):
            c.check(f"tarball has {f}", os.path.exists(f"{pkg}/{f}"))
        for binary in ("peerd", "peerctl"):
            linked = subprocess.run(["ldd", f"{pkg}/bin/{binary}"], capture_output=True, text=True).stdout
            c.check(f"{binary} links no Swift runtime from the toolchain", not re.search(r"swift|/opt/", linked), linked)
            out = c.command(f"{binary} --version says {version}", f"{pkg}/bin/{binary}", "--version", env=CLEAN_ENV, cwd=clean)
            c.check(f"… exactly {version}", out.strip() == version, out)
        etc = f"{clean}/etc"
        c.command("peerctl init in a clean folder", f"{pkg}/bin/peerctl", "init", "--name", "web-1", "--address",
                  "203.0.113.10", "--app", "shop", "--server-name", "shop.example.com", "--dir", etc, env=CLEAN_ENV, cwd=clean)
        c.command("peerctl config check on what init wrote", f"{pkg}/bin/peerctl", "config", "check", "--config",
                  f"{etc}/peer.yml", env=CLEAN_ENV, cwd=clean)
        r = subprocess.run([f"{pkg}/bin/peerctl", "config", "check", "--config", f"{clean}/nope.yml"], env=CLEAN_ENV,
                           capture_output=True, text=True)
        c.check("config check names a missing file", r.returncode != 0 and "nope.yml" in r.stdout + r.stderr, r.stderr)

        log("install.sh")
        root = f"{work}/root"
        c.command("install.sh --root (first run)", f"{pkg}/install.sh", "--root", root, "--skip-checks")
        first = tree(root)
        c.command("install.sh --root (second run: idempotent)", f"{pkg}/install.sh", "--root", root, "--skip-checks")
        second = tree(root)
        c.check("a second run leaves the same files and modes", first == second,
                "\n".join(sorted(set(first) ^ set(second))))
        c.check("/etc/peer is 0700", mode(f"{root}/etc/peer") == "700")
        c.check("/var/lib/peer is 0700", mode(f"{root}/var/lib/peer") == "700")
        c.check("the example config is 0600", mode(f"{root}/etc/peer/peer.example.yml") == "600")
        c.check("binaries in /usr/local/bin", all(os.access(f"{root}/usr/local/bin/{b}", os.X_OK) for b in ("peerd", "peerctl")))
        unit = open(f"{root}/etc/systemd/system/peerd.service").read()
        c.check("the unit runs /usr/local/bin/peerd", "ExecStart=/usr/local/bin/peerd --config /etc/peer/peer.yml" in unit)
        env = dict(os.environ, DOCKER_SOCKET=f"{work}/no-docker.sock", NGINX_BIN="no-such-nginx", PEER_MESH_PORT="1")
        r = subprocess.run([f"{pkg}/install.sh", "--root", f"{work}/root2"], env=env, capture_output=True, text=True)
        out = r.stdout + r.stderr
        c.check("install.sh refuses without docker and nginx", r.returncode == 1 and not os.path.exists(f"{work}/root2"), out)
        c.check("… saying how to install nginx", "nginx is not installed: apt-get install nginx" in out, out)
        c.check("… and that docker is missing", f"no Docker socket at {work}/no-docker.sock" in out, out)

        source_unit = open(f"{ROOT}/deploy/systemd/peerd.service").read()
        if not shutil.which("systemd-analyze"):
            c.skip("systemd-analyze verify peerd.service", "systemd-analyze is not installed (apt-get install systemd)")
        else:
            log("systemd unit")
            with open(f"{work}/peerd.service", "w") as f:
                f.write(unit.replace("/usr/local/bin/", f"{root}/usr/local/bin/"))
            r = subprocess.run(["systemd-analyze", "verify", f"{work}/peerd.service"], capture_output=True, text=True)
            complaints = [line for line in (r.stdout + r.stderr).splitlines()
                          if line and not any(k in line for k in ("Failed to add dependency", "docker.service", "nginx.service"))]
            c.check("systemd-analyze verify peerd.service", not complaints, "\n".join(complaints))
        c.check("the unit leaves the app running when peerd stops (KillMode=mixed, not control-group)",
                re.search(r"^KillMode=mixed", source_unit, re.M) is not None)
        c.check("the unit restarts on failure but not on a bad config",
                re.search(r"^Restart=on-failure", source_unit, re.M) is not None
                and re.search(r"^RestartPreventExitStatus=78", source_unit, re.M) is not None)

        log("the Debian package")
        info = subprocess.run(["dpkg-deb", "--info", deb], capture_output=True, text=True, check=True).stdout
        contents = subprocess.run(["dpkg-deb", "--contents", deb], capture_output=True, text=True, check=True).stdout
        c.check("package name and version", re.search(r"^ Package: peer$", info, re.M) is not None
                and re.search(rf"^ Version: {re.escape(version)}$", info, re.M) is not None, info)
        symbols = subprocess.run(["objdump", "-T", f"{pkg}/bin/peerd", f"{pkg}/bin/peerctl"], capture_output=True, text=True).stdout
        floor = max((tuple(int(p) for p in v.split(".")) for v in re.findall(r"GLIBC_([0-9][0-9.]*[0-9])", symbols)), default=None)
        wanted = "Depends: libc6 (>= " + ".".join(map(str, floor or ())) + "), libstdc++6, zlib1g"
        c.check(f"depends on glibc (the binaries' floor, {'.'.join(map(str, floor or ()))}), libstdc++ and zlib only", wanted in info, info)
        for f in ("./usr/bin/peerd", "./usr/bin/peerctl", "./lib/systemd/system/peerd.service",
                  "./usr/share/peer/peer.example.yml", "./usr/share/doc/peer/getting-started.md",
                  "./usr/share/bash-completion/completions/peerctl", "./usr/share/zsh/vendor-completions/_peerctl",
                  "./usr/share/fish/vendor_completions.d/peerctl.fish", "./usr/share/man/man1/peerctl.1.gz",
                  "./usr/share/man/man8/peerd.8.gz"):
            c.check(f"deb has {f}", re.search(rf" {re.escape(f)}$", contents, re.M) is not None)
        if shutil.which("bash"):
            c.command("the bash completion loads and completes peerctl's subcommands", "bash", "-c",
                      f"source {pkg}/completions/peerctl.bash && COMP_WORDS=(peerctl de) COMP_CWORD=1 "
                      "COMP_LINE='peerctl de' COMP_POINT=10 && _peerctl peerctl de peerctl && "
                      "printf '%s\\n' \"${COMPREPLY[@]}\"", contains="deploys")
        manual = open(f"{pkg}/man/peerctl.1").read() if os.path.exists(f"{pkg}/man/peerctl.1") else ""
        c.check("the peerctl manual page covers its subcommands and their options", ".Dt PEERCTL 1" in manual
                and all(w in manual for w in (".It Em deploy", ".It Em operator", ".It Em revoke", "Fl -scope")), manual[:400])
        c.check("files in the deb are root's", all(" root/root " in line for line in contents.splitlines()), contents)
        installed = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "peer"], capture_output=True, text=True).stdout
        if os.geteuid() != 0:
            c.skip("dpkg -i and dpkg --purge of the package", "not root")
        elif installed == "install ok installed":
            c.skip("dpkg -i and dpkg --purge of the package", "a peer package is installed on this machine already")
        else:
            c.command("dpkg -i", "dpkg", "-i", deb)
            c.command("/usr/bin/peerctl --version", "/usr/bin/peerctl", "--version", contains=version)
            c.check("/etc/peer is 0700 after install", os.path.isdir("/etc/peer") and mode("/etc/peer") == "700")
            c.command("dpkg --purge", "dpkg", "--purge", "peer")
            c.check("binaries removed", not os.path.exists("/usr/bin/peerd"))
            c.check("purge leaves no empty /etc/peer", not os.path.exists("/etc/peer"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if c.failures:
        die(f"{c.failures} packaging check(s) failed")
    log("packaging: all checks passed")
