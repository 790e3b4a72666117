#!/usr/bin/env bash
# Installs peer from an unpacked release tarball (bin/peerd, bin/peerctl next to this script). Safe to run
# again: it upgrades the binaries and the unit, fixes modes, and never touches /etc/peer/peer.yml.
#
#   sudo ./install.sh                 check prerequisites, install, reload systemd
#   sudo ./install.sh --enable        … and enable + (re)start peerd (needs /etc/peer/peer.yml)
#   ./install.sh --root DIR --skip-checks   install into DIR (packaging, tests)
#
# Upgrading peer itself: run the new version's install.sh --enable; a restarted peerd adopts the running app
# container without a blip (docs/operations.md).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root=""
prefix="/usr/local"
checks=1
enable=0
docker_socket="${DOCKER_SOCKET:-/var/run/docker.sock}"
nginx_bin="${NGINX_BIN:-nginx}"
mesh_port="${PEER_MESH_PORT:-}"

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root="${2:?--root needs a directory}"; shift 2 ;;
        --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
        --skip-checks) checks=0; shift ;;
        --enable) enable=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "install.sh: unknown argument $1" >&2; usage 2 ;;
    esac
done

say() { printf '%s\n' "$*"; }
problem() { printf 'install.sh: %s\n' "$*" >&2; problems=$((problems + 1)); }

for f in bin/peerd bin/peerctl systemd/peerd.service peer.example.yml; do
    [ -e "$here/$f" ] || { echo "install.sh: $here/$f is missing: run this script from an unpacked peer tarball (deploy/package makes one)" >&2; exit 2; }
done

if [ "$checks" = 1 ]; then
    problems=0
    [ "$(id -u)" = 0 ] || problem "run as root (sudo ./install.sh): peerd manages docker and nginx"
    if ! command -v "$nginx_bin" >/dev/null 2>&1; then
        problem "nginx is not installed: apt-get install nginx (peer writes one server block into /etc/nginx/conf.d/)"
    elif [ -f /etc/nginx/nginx.conf ] && ! grep -Eq 'include[[:space:]]+/etc/nginx/conf\.d/\*\.conf' /etc/nginx/nginx.conf; then
        problem "/etc/nginx/nginx.conf does not include /etc/nginx/conf.d/*.conf: add it in the http block, or set nginx.site in peer.yml to a file it includes"
    fi
    if [ ! -S "$docker_socket" ]; then
        problem "no Docker socket at $docker_socket: install Docker (apt-get install docker.io) and start it (systemctl enable --now docker)"
    elif command -v curl >/dev/null 2>&1 && ! curl -sf --max-time 5 --unix-socket "$docker_socket" http://docker/_ping >/dev/null; then
        problem "Docker does not answer on $docker_socket: systemctl start docker; journalctl -u docker"
    fi
    if [ -z "$mesh_port" ] && [ -f /etc/peer/peer.yml ]; then
        mesh_port="$(sed -n '/^mesh:/,/^[^ ]/s/^  listen: *.*:\([0-9][0-9]*\) *$/\1/p' /etc/peer/peer.yml | head -1)"
    fi
    if command -v ss >/dev/null 2>&1; then
        for port in ${mesh_port:-7946}; do
            holder="$(ss -Hltnp "sport = :$port" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)".*/\1/p' | head -1)"
            if [ -n "$holder" ] && [ "$holder" != peerd ]; then
                problem "port $port (mesh) is in use by $holder: stop it or choose another mesh.listen port"
            fi
        done
        for port in 80 443; do
            holder="$(ss -Hltnp "sport = :$port" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)".*/\1/p' | head -1)"
            if [ -n "$holder" ] && [ "$holder" != nginx ]; then
                problem "port $port is in use by $holder, not nginx: peer serves the app through nginx on it"
            fi
        done
    fi
    if [ "$problems" -gt 0 ]; then
        echo "install.sh: $problems problem(s); nothing installed. Fix them and run again (or --skip-checks)." >&2
        exit 1
    fi
    say "prerequisites: ok (root, nginx, docker, ports)"
fi

bindir="$root$prefix/bin"
share="$root$prefix/share/peer"
unitdir="$root/etc/systemd/system"
install -d -m 0755 "$bindir" "$share" "$share/nginx" "$unitdir"
install -m 0755 "$here/bin/peerd" "$here/bin/peerctl" "$bindir/"
# The config and the state hold keys and tokens: root only, even if they existed with other modes.
install -d -m 0700 "$root/etc/peer" "$root/var/lib/peer"
chmod 0700 "$root/etc/peer" "$root/var/lib/peer"
install -m 0600 "$here/peer.example.yml" "$root/etc/peer/peer.example.yml"
[ -f "$root/etc/peer/peer.yml" ] && chmod 0600 "$root/etc/peer/peer.yml"
for f in "$here"/nginx/*; do [ -e "$f" ] && install -m 0644 "$f" "$share/nginx/"; done
if [ -d "$here/docs" ]; then install -d -m 0755 "$share/docs" && install -m 0644 "$here"/docs/*.md "$share/docs/"; fi
if [ -d "$here/man" ]; then
    install -d -m 0755 "$root$prefix/share/man/man1" "$root$prefix/share/man/man8"
    install -m 0644 "$here/man/peerctl.1" "$root$prefix/share/man/man1/"
    install -m 0644 "$here/man/peerd.8" "$root$prefix/share/man/man8/"
fi
sed "s|/usr/bin/|$prefix/bin/|g" "$here/systemd/peerd.service" > "$unitdir/peerd.service.new"
chmod 0644 "$unitdir/peerd.service.new"
mv "$unitdir/peerd.service.new" "$unitdir/peerd.service"
say "installed: $bindir/peerd, $bindir/peerctl, $unitdir/peerd.service, $root/etc/peer/peer.example.yml"

if [ -z "$root" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ "$enable" = 1 ]; then
        if [ ! -f /etc/peer/peer.yml ]; then
            echo "install.sh: /etc/peer/peer.yml does not exist yet: peerctl init (first node) or peerctl join (the others), then run again with --enable" >&2
            exit 1
        fi
        "$prefix/bin/peerctl" config check --config /etc/peer/peer.yml
        systemctl enable peerd >/dev/null
        systemctl restart peerd
        say "peerd enabled and (re)started: systemctl status peerd; journalctl -u peerd -f"
    fi
fi
if [ ! -f "$root/etc/peer/peer.yml" ]; then
    say "next: peerctl init (on the first node) or peerctl join BUNDLE (on the others); see docs/getting-started.md"
fi
