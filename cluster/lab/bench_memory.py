"""Idle memory and CPU of peerd: brings up a cluster (cluster/up, 5 nodes by default, each with its app), lets
it idle, and prints per node RSS / PSS / anonymous memory and CPU over a window, then for one node where the
resident pages are: by mapping, and by section of the peerd binary.

  cluster/bench-memory [--nodes 5] [--settle 30] [--window 60]
  PEER_BIN=DIR cluster/bench-memory      peerd/peerctl from DIR (default .build/release; for the packaged build
                                         copy .build/package/release/{peerd,peerctl} to a folder)

Needs the test bed (cluster/testbed up) and peer-stub. Stops the cluster at the end."""
import argparse, collections, os, re, subprocess, time

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--nodes", type=int, default=5)
parser.add_argument("--settle", type=float, default=30, help="seconds after cluster/up before measuring")
parser.add_argument("--window", type=float, default=60, help="seconds of CPU measurement")
args = parser.parse_args()
os.environ["PEER_CLUSTER_NODES"] = str(args.nodes)
from . import cluster as pc  # noqa: E402

def rollup(pid):
    out = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0]) / 1024
    return out


def mappings(pid):
    by, anon, sections = collections.Counter(), collections.Counter(), collections.Counter()
    binary = os.path.realpath(f"/proc/{pid}/exe")
    current = None
    for line in open(f"/proc/{pid}/smaps"):
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            parts = line.split(None, 5)
            current = os.path.basename(parts[5].strip()) if len(parts) > 5 else "[anonymous]"
        elif line.startswith("Rss:"):
            by[current] += int(line.split()[1]) / 1024
        elif line.startswith("Anonymous:"):
            anon[current] += int(line.split()[1]) / 1024
    # Resident pages of the binary by section (pagemap: present bit; file offsets to section ranges).
    ranges = []
    for line in subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True).stdout.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)", line)
        if m and int(m.group(3), 16):
            ranges.append((int(m.group(2), 16), int(m.group(3), 16), m.group(1)))
    pagemap = open(f"/proc/{pid}/pagemap", "rb")
    for line in open(f"/proc/{pid}/maps"):
        parts = line.split()
        if len(parts) < 6 or os.path.realpath(parts[5]) != binary:
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        pagemap.seek(start // 4096 * 8)
        entries = pagemap.read((end - start) // 4096 * 8)
        for i in range((end - start) // 4096):
            if int.from_bytes(entries[i * 8:i * 8 + 8], "little") >> 63:
                offset = int(parts[2], 16) + i * 4096
                name = next((n for o, s, n in ranges if o <= offset < o + s), "(headers)")
                sections[name] += 4 / 1024
    return by, anon, sections


pc.down()
try:
    pc.up()
    print(f"==> {args.nodes} nodes up ({pc.BIN}); idling {args.settle:.0f} s, then CPU over {args.window:.0f} s", flush=True)
    time.sleep(args.settle)
    pids = {n: pc.pid_of(n) for n in pc.NODES}
    before = {n: pc.cpu_seconds(p) for n, p in pids.items()}
    time.sleep(args.window)
    print(f"{'node':6} {'RSS MiB':>8} {'PSS MiB':>8} {'anon MiB':>9} {'CPU %':>6}")
    rows = []
    for n, p in pids.items():
        r = rollup(p)
        cpu = (pc.cpu_seconds(p) - before[n]) / args.window * 100
        rows.append((r["Rss"], r["Pss"], r["Anonymous"], cpu))
        print(f"{n:6} {r['Rss']:8.1f} {r['Pss']:8.1f} {r['Anonymous']:9.1f} {cpu:6.2f}")
    rows.sort()
    print(f"median RSS {rows[len(rows) // 2][0]:.1f} MiB, median CPU {sorted(r[3] for r in rows)[len(rows) // 2]:.2f} % of a core")
    by, anon, sections = mappings(pids[pc.NODES[0]])
    print(f"{pc.NODES[0]} by mapping (MiB): " + ", ".join(f"{k} {v:.1f}" + (f" (anon {anon[k]:.1f})" if anon[k] >= 0.1 and k != '[anonymous]' else "")
                                               for k, v in by.most_common(8)))
    print(f"{pc.NODES[0]} peerd binary by section (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in sections.most_common(8)))
finally:
    pc.down()
