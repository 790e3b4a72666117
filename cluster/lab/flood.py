"""A stranger on the mesh port, for the hostile-client tests: opens idle TCP connections and half-open TLS
handshakes (a ClientHello's first bytes, then nothing) to one node, from many loopback source addresses, holds
them, then closes them all. Bounded: at most 20,000 connections, at most 120 s, loopback targets only.

  cluster/fault-flood HOST PORT --idle N --half-open M [--hold SECONDS] [--sources 127.0.9.]
Prints one line: opened, refused (the node closed them at once or the kernel refused), and closed by the node
before the hold ended."""
import argparse, ipaddress, resource, selectors, socket, sys, time

p = argparse.ArgumentParser()
p.add_argument("host"); p.add_argument("port", type=int)
p.add_argument("--idle", type=int, default=0); p.add_argument("--half-open", type=int, default=0)
p.add_argument("--hold", type=float, default=10); p.add_argument("--sources", default="127.0.9.")
a = p.parse_args()
if not ipaddress.ip_address(a.host).is_loopback: sys.exit("flood: loopback targets only")
total = a.idle + a.half_open
if total > 20000 or a.hold > 120: sys.exit("flood: at most 20000 connections and 120 s")
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = min(hard, total + 256) if hard != resource.RLIM_INFINITY else total + 256
if soft < want: resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
# A TLS record header announcing a 512-byte handshake message, and its first bytes: the rest never comes.
partial_hello = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])
selector = selectors.DefaultSelector()


def closed(s):
    """Reads what the node sent; 1 (and the socket unregistered and closed) if the node closed the connection."""
    try:
        data = s.recv(4096)
    except OSError:
        data = b""
    if data:
        return 0
    selector.unregister(s)
    s.close()
    return 1


connecting = 0
for i in range(total):
    s = socket.socket()
    s.bind((f"{a.sources}{1 + i % 200}", 0))
    s.setblocking(False)
    s.connect_ex((a.host, a.port))  # in progress: finished below
    selector.register(s, selectors.EVENT_WRITE, data=i >= a.idle)
    connecting += 1
opened, refused, closed_by_node = 0, 0, 0
settle = time.time() + 20
while connecting and time.time() < settle:
    for key, _ in selector.select(timeout=0.2):
        s = key.fileobj
        if key.events & selectors.EVENT_WRITE:
            connecting -= 1
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                refused += 1; selector.unregister(s); s.close(); continue
            opened += 1
            try:
                if key.data: s.send(partial_hello)
            except OSError:
                pass
            selector.modify(s, selectors.EVENT_READ)
            continue
        closed_by_node += closed(s)
deadline = time.time() + a.hold
while time.time() < deadline and selector.get_map():
    for key, _ in selector.select(timeout=0.2):
        s = key.fileobj
        if key.events & selectors.EVENT_WRITE:
            continue
        closed_by_node += closed(s)
for key in list(selector.get_map().values()): key.fileobj.close()
print(f"opened {opened} refused {refused} closed_by_node {closed_by_node}", flush=True)
