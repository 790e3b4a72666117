"""Writes deploy/peerd.order: the functions an idle peerd runs, for the linker to lay out together at the start
of the code (lld --symbol-ordering-file, in deploy/package). With them on a few hundred pages instead of spread
over 27 MiB, an idle peerd keeps few code pages resident once it has released its start-up pages
(docs/benchmarks.md, "peerd memory").

  PEER_BIN=.build/package/release cluster/profile-order [--nodes 5] [--settle 40] [--seconds 90]

Brings up a cluster (cluster/up, each node with its app) and lets it idle past peerd's first release of its
start-up pages. Then, with read-ahead off for the disk and the binary dropped from the page cache, each peerd
releases its pages again (SIGUSR1): from there on every code page an idle peerd touches is read alone, so the
pages resident at the end are exactly the ones it ran (a debugger would not do: its reads map pages too). Meanwhile perf samples the
hot functions and records every page fault: the first function to run on a page faults it in. The order file
lists the sampled functions, hottest first, then the ones that faulted. A function that ran on a page another
one faulted in first is not seen: run it again on a build with the new order to find those (each round finds
fewer; what the file already lists is kept, after the new). Needs perf, root, the test bed (cluster/testbed up), peer-stub, and an unstripped peerd (the
packaged build before strip: .build/package/release). Run it again when the code changes much: names that no
longer exist are skipped by the linker, new code is laid out after."""
import argparse, collections, os, signal, struct, subprocess, sys, tempfile, time

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--nodes", type=int, default=5)
parser.add_argument("--settle", type=float, default=40, help="seconds after cluster/up before profiling")
parser.add_argument("--seconds", type=float, default=90, help="seconds of idling profiled")
args = parser.parse_args()
os.environ["PEER_CLUSTER_NODES"] = str(args.nodes)
from . import cluster as pc  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
binary = os.path.realpath(os.path.join(pc.BIN, "peerd"))
if b".symtab" not in subprocess.run(["readelf", "-S", binary], capture_output=True).stdout:
    sys.exit(f"{binary} has no symbol table: use the unstripped build (.build/package/release)")
out = os.path.join(pc.ROOT, "deploy/peerd.order")


def read_ahead_file(path):
    st = os.stat(path)
    device = os.path.realpath(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    for d in (device, os.path.dirname(device)):  # a partition has its queue on the disk
        if os.path.exists(f"{d}/queue/read_ahead_kb"):
            return f"{d}/queue/read_ahead_kb"
    sys.exit(f"no read_ahead_kb for the disk of {path}")


def code_mapping(pid):
    for line in open(f"/proc/{pid}/maps"):
        f = line.split()
        if len(f) > 5 and f[1] == "r-xp" and os.path.realpath(f[5]) == binary:
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            return lo, hi, int(f[2], 16)
    sys.exit(f"pid {pid}: no code mapping of {binary}")


def resident_file_offsets(pid):
    lo, hi, offset = code_mapping(pid)
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(lo // PAGE * 8)
        entries = f.read((hi - lo) // PAGE * 8)
    return {offset + i * PAGE for i in range((hi - lo) // PAGE) if struct.unpack_from("<Q", entries, i * 8)[0] >> 63}


def drop_from_page_cache(path):
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


ra_file = read_ahead_file(binary)
read_ahead = open(ra_file).read().strip()
pc.down()
try:
    # Off before peerd starts (a mapping reads ahead as much as the disk allowed when the file was opened), and
    # the binary read from disk again: pages then come into the cache one by one, not in large folios that a
    # fault maps whole.
    with open(ra_file, "w") as f:
        f.write("0")
    drop_from_page_cache(binary)
    pc.up()
    print(f"==> {args.nodes} nodes up ({pc.BIN}); idling {args.settle:.0f} s", flush=True)
    time.sleep(args.settle)
    pids = [pc.pid_of(n) for n in pc.NODES]
    # Twice: the pages that idle work maps back between the release and the eviction go in the second round.
    for _ in range(2):
        for pid in pids:
            os.kill(pid, signal.SIGUSR1)
        time.sleep(0.5)
        drop_from_page_cache(binary)
    print(f"==> pages released, {binary} dropped from the page cache, read-ahead off; profiling {args.seconds:.0f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock/freq=20000/", "-e", "major-faults/period=1/",
                        "-p", ",".join(map(str, pids)), "-o", data, "--", "sleep", str(args.seconds)],
                       check=True, stderr=subprocess.DEVNULL)
        touched = set().union(*(resident_file_offsets(pid) for pid in pids))
        script = subprocess.run(["perf", "script", "-i", data, "-F", "event,ip,sym,dso", "--no-demangle"],
                                capture_output=True, text=True, check=True).stdout
finally:
    with open(ra_file, "w") as f:
        f.write(read_ahead)
    pc.down()

sampled, faulted = collections.Counter(), []
for line in script.splitlines():
    rest, _, dso = line.strip().rpartition(" (")  # "EVENT: ADDRESS SYMBOL (DSO)"
    event, _, rest = rest.partition(": ")
    symbol = rest.strip().partition(" ")[2].strip()
    if dso.rstrip(")") != binary or not symbol or symbol == "[unknown]":
        continue
    if event.strip().startswith("cpu-clock"):
        sampled[symbol] += 1
    elif symbol not in faulted:
        faulted.append(symbol)

order = [name for name, _ in sampled.most_common()]
listed = set(order)
order += [name for name in faulted if name not in listed]
# What earlier rounds found stays (it ran too, but on pages laid out together it no longer faults first).
if os.path.exists(out):
    listed = set(order)
    order += [name for name in open(out).read().split() if name not in listed]
if len(sampled) < 100:
    sys.exit(f"only {len(sampled)} functions of {binary} sampled: is this the binary the cluster ran?")
with open(out, "w") as f:
    f.write("\n".join(order) + "\n")
print(f"==> {out}: {len(sampled)} sampled functions, then {len(order) - len(sampled)} more that faulted in one of the "
      f"{len(touched)} code pages touched")
