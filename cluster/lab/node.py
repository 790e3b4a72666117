"""One node of the single-node demo and benchmark: its own folder, nginx on its own loopback address, a peer.yml
(no mesh, no DNS)."""
import os, subprocess

from .base import RUN_DIR, die, sh


def node_dir(name):
    return os.path.join(RUN_DIR, "nodes", name)


def write_files(name, address, port=80, health_timeout=os.environ.get("PEER_HEALTH_TIMEOUT", "15s")):
    """Writes RUN_DIR/nodes/NAME/{peer.yml,nginx/}."""
    d = node_dir(name)
    for sub in ("nginx/sites", "nginx/logs", "nginx/temp", "state", "run"):
        os.makedirs(f"{d}/{sub}", exist_ok=True)
    os.chmod(f"{d}/nginx/temp", 0o777)
    with open(f"{d}/nginx/nginx.conf", "w") as f:
        f.write(f"""# Test bed nginx for node {name}: its own pid, logs and sites; the peer-managed site is in sites/.
pid {d}/nginx/nginx.pid;
error_log {d}/nginx/logs/error.log warn;
worker_processes 2;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/nginx/temp/body;
    proxy_temp_path {d}/nginx/temp/proxy;
    fastcgi_temp_path {d}/nginx/temp/fastcgi;
    uwsgi_temp_path {d}/nginx/temp/uwsgi;
    scgi_temp_path {d}/nginx/temp/scgi;
    include {d}/nginx/sites/*.conf;
}}
""")
    with open(f"{d}/peer.yml", "w") as f:
        f.write(f"""# Test bed config for node {name} (written by cluster/lab/node.py).
node:
  name: {name}
  address: {address}
app:
  name: testapp
  port: 8080
  health:
    path: /health
    timeout: {health_timeout}
  env:
    NODE_NAME: {name}
  stop_grace: 2s
  drain_timeout: 10s
nginx:
  site: {d}/nginx/sites/peer-testapp.conf
  listen: {address}:{port}
  server_name: testapp.local
  prefix: {d}/nginx
  config: {d}/nginx/nginx.conf
  pid_file: {d}/nginx/nginx.pid
state_dir: {d}/state
control:
  socket: {d}/run/peerd.sock
""")
    os.chmod(f"{d}/peer.yml", 0o600)
    return d


def nginx_pid(name):
    try:
        pid = int(open(f"{node_dir(name)}/nginx/nginx.pid").read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def nginx_up(name):
    if nginx_pid(name):
        return
    d = node_dir(name)
    r = sh("nginx", "-p", f"{d}/nginx", "-c", f"{d}/nginx/nginx.conf", "-e", f"{d}/nginx/logs/error.log", check=False)
    if r.returncode != 0:
        die(f"nginx of {name} did not start: {r.stderr.strip()}")


def nginx_reload(name):
    d = node_dir(name)
    sh("nginx", "-p", f"{d}/nginx", "-c", f"{d}/nginx/nginx.conf", "-s", "reload")


def nginx_down(name):
    pid = nginx_pid(name)
    if pid:
        os.kill(pid, 3)  # SIGQUIT: graceful


def remove_containers(label):
    """docker rm -f every container with this label (key=value)."""
    ids = sh("docker", "ps", "-aq", "--filter", f"label={label}", check=False).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
