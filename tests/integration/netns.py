"""Network-namespace lab for multi-node integration tests: hosts on a private L2 segment whose links can be
cut, healed, rate-limited and delayed.

    from netns import Lab
    with Lab("hnlab", hosts=3) as lab:          # hosts a, b, c
        a, b = lab.host("a"), lab.host("b")
        proc = a.popen([hypernet, "serve", ...])  # network namespace only: FUSE mounts stay visible
        lab.partition(["a"], ["b", "c"])          # a <-/-> b, a <-/-> c; b <-> c still fine
        lab.heal()
        lab.limit_rate("b", "1mbit")              # tbf both ways on b's link
        relay = lab.delay_relay(("10.213.1.12", 7000), ("10.213.1.11", 7000), 0.05, host="b")

Layout: a dedicated namespace `PREFIX-PID.SEQ-br` holds the bridge `br0`; each host is a namespace
`PREFIX-PID.SEQ-NAME` with `eth0` (10.213.1.X/24, X = 11, 12, ...) whose veth peer `veth-NAME` is a port of the
bridge. Nothing is created in the root namespace, no default route exists in the hosts, so the labs are
isolated from each other and from the machine's own network; the same subnet can be used by parallel labs.

Commands: `Host.run()` goes through `ip netns exec` (which also gives the command a private mount
namespace and its own /sys); `Host.popen()` uses `nsenter --net=/run/netns/NS`, which enters only the network
namespace, so a FUSE mount made by the process is visible to the host and to the test.

Partitions are nft rules (table `inet hnlab`) in the hosts' namespaces: every packet from a peer on the other
side is dropped on input, established connections included (no conntrack exemption), so the link behaves
like a cut cable: senders see timeouts, not errors. (Output drops are avoided on purpose: the kernel reports
them at once to a UDP sender as EPERM, which a real partition never does.)

Rate limits are tbf qdiscs (there is no netem in this kernel): on the host's eth0 for its egress and on its
bridge port for its ingress. For latency there is `delay_relay`, a user-space TCP relay in an asyncio thread
that can live in any lab namespace (it setns()es per socket) and delays each direction by a time with jitter,
changeable while it runs, for every connection or those from one address (`Relay.set_delay`).

Cleanup (`close()`, also on exceptions and at interpreter exit) kills every process in the lab's namespaces
(tracked Popen objects first, then `ip netns pids`), then deletes the namespaces, which takes the veths,
bridge, qdiscs and nft tables with them. `sweep_stale(prefix)` does the same for labs whose PID is dead
(e.g. after a SIGKILLed pytest); `Lab.__enter__` calls it for its prefix.

Needs root, iproute2 (`ip`, `tc`), nftables (`nft`) and util-linux (`nsenter`). Standard library only.
"""

import asyncio
import atexit
import contextlib
import ctypes
import itertools
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

DEFAULT_PREFIX = "hnlab"
DEFAULT_SUBNET = "10.213.1"      # /24; private, unlikely to clash (and only visible inside the lab anyway)
FIRST_HOST_OCTET = 11
NFT_TABLE = "hnlab"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_seq = itertools.count()
_live_labs = set()


class LabError(RuntimeError):
    pass


# --- small helpers ----------------------------------------------------------------------------------------

def _run(args, check=True, input=None, timeout=30):
    proc = subprocess.run(args, capture_output=True, text=True, input=input, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_netns():
    """Names of the named network namespaces (`ip netns list`)."""
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(ns):
    out = _run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _kill_pids(pids, grace=3.0):
    pids = [p for p in pids if p != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_pid_alive(p) and not _is_zombie(p) for p in pids):
        time.sleep(0.02)
    for pid in pids:
        if _pid_alive(pid) and not _is_zombie(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _delete_netns(ns):
    """Kill everything inside `ns`, then delete it. Idempotent."""
    for _ in range(3):
        pids = netns_pids(ns)
        if not pids:
            break
        _kill_pids(pids)
    _run(["ip", "netns", "delete", ns], check=False)


@contextlib.contextmanager
def in_netns(ns):
    """Runs the block with the calling thread in network namespace `ns` (None: stay). Sockets created inside
    keep that namespace for their whole life; only this thread is affected."""
    if ns is None:
        yield
        return
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        there = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if _libc.setns(there, CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                raise OSError(e, f"setns({ns}): {os.strerror(e)}")
        finally:
            os.close(there)
        try:
            yield
        finally:
            if _libc.setns(here, CLONE_NEWNET) != 0:  # pragma: no cover - would leave the thread elsewhere
                e = ctypes.get_errno()
                raise OSError(e, f"setns(back): {os.strerror(e)}")
    finally:
        os.close(here)


def parse_rate(rate) -> int:
    """Bits per second from an int (bit/s) or a tc-style string: '1mbit', '500kbit', '2.5mbit', '125kbps'
    (bps = bytes per second, as in tc)."""
    if isinstance(rate, (int, float)):
        return int(rate)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(bit|bps)?\s*", str(rate).lower())
    if not m:
        raise ValueError(f"bad rate {rate!r}")
    value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]
    return int(value * (8 if m.group(3) == "bps" else 1))


def available():
    """(True, '') when labs can be built here, else (False, reason). Creates and removes a probe namespace."""
    if os.geteuid() != 0:
        return False, "needs root"
    for tool in ("ip", "nsenter"):
        if not shutil.which(tool):
            return False, f"{tool} not installed"
    probe = f"{DEFAULT_PREFIX}probe-{os.getpid()}.{next(_seq)}-x"
    proc = _run(["ip", "netns", "add", probe], check=False)
    if proc.returncode != 0:
        return False, f"ip netns add failed: {proc.stderr.strip()}"
    try:
        veth = _run(["ip", "-n", probe, "link", "add", "t0", "type", "veth", "peer", "name", "t1"], check=False)
        if veth.returncode != 0:
            return False, f"veth not available: {veth.stderr.strip()}"
    finally:
        _delete_netns(probe)
    return True, ""


def sweep_stale(prefix=DEFAULT_PREFIX):
    """Deletes the namespaces (and kills their processes) of labs with this prefix whose creator PID is
    dead. Returns the names removed."""
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)\.\d+-[A-Za-z0-9]+$")
    removed = []
    for ns in list_netns():
        m = pattern.match(ns)
        if m and not _pid_alive(int(m.group(1))):
            _delete_netns(ns)
            removed.append(ns)
    return removed


# --- hosts -----------------------------------------------------------------------------------------------

class Host:
    """One lab host: a network namespace with eth0 on the lab bridge."""

    ifname = "eth0"

    def __init__(self, lab, name, ns, ip, port):
        self.lab = lab
        self.name = name
        self.ns = ns          # namespace name (/run/netns/<ns>)
        self.ip = ip          # address on the lab segment
        self.port = port      # the veth end on the bridge (in lab.bridge_ns)

    def __repr__(self):
        return f"Host({self.name!r}, ns={self.ns!r}, ip={self.ip!r})"

    @property
    def netns_path(self):
        return f"/run/netns/{self.ns}"

    def run(self, cmd, check=True, timeout=60, **kw):
        """Runs `cmd` (list, or a string for sh -c) via `ip netns exec`; returns CompletedProcess (text,
        captured output unless overridden)."""
        args = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(["ip", "netns", "exec", self.ns, *args], check=check, timeout=timeout, **kw)

    def popen(self, args, **kw):
        """subprocess.Popen of `args` inside this host's network namespace only (nsenter --net), so its
        mounts are the caller's. The lab kills it on cleanup if it is still running."""
        args = ["sh", "-c", args] if isinstance(args, str) else list(args)
        proc = subprocess.Popen(["nsenter", f"--net={self.netns_path}", "--", *args], **kw)
        self.lab._procs.append(proc)
        return proc

    def socket(self, family=socket.AF_INET, type=socket.SOCK_STREAM, proto=0):
        """A socket of the caller's process that lives in this host's namespace."""
        with in_netns(self.ns):
            return socket.socket(family, type, proto)

    def connect(self, address, timeout=5.0):
        """A TCP connection from this host to `address` (ip, port); raises OSError/timeout on failure."""
        s = self.socket()
        s.settimeout(timeout)
        try:
            s.connect(address)
        except BaseException:
            s.close()
            raise
        return s

    def in_netns(self):
        return in_netns(self.ns)


# --- the lab -----------------------------------------------------------------------------------------------

class Lab:
    """Context manager: a bridge namespace plus `hosts` host namespaces (an int for a, b, c, ... or a list
    of names). Everything is undone by close(), also when the block raises."""

    def __init__(self, prefix=DEFAULT_PREFIX, hosts=3, subnet=DEFAULT_SUBNET):
        if not re.fullmatch(r"[A-Za-z0-9_]{1,24}", prefix):
            raise ValueError("prefix: 1-24 letters, digits or _")
        names = [chr(ord("a") + i) for i in range(hosts)] if isinstance(hosts, int) else list(hosts)
        for n in names:
            if not re.fullmatch(r"[a-z0-9]{1,12}", n) or n == "br":
                raise ValueError(f"host name {n!r}: 1-12 lowercase letters/digits, not 'br'")
        if len(set(names)) != len(names) or len(names) > 200:
            raise ValueError("host names must be unique (at most 200)")
        self.prefix = prefix
        self.base = f"{prefix}-{os.getpid()}.{next(_seq)}"
        self.bridge_ns = f"{self.base}-br"
        self.subnet = subnet
        self.hosts = [Host(self, n, f"{self.base}-{n}", f"{subnet}.{FIRST_HOST_OCTET + i}", f"veth-{n}")
                      for i, n in enumerate(names)]
        self._by_name = {h.name: h for h in self.hosts}
        self._procs = []
        self._blocked = set()       # frozenset({host_name, host_name}) pairs that are partitioned
        self._relays = []
        self._loop = None
        self._loop_thread = None
        self._created = []
        self._closed = False

    # lifecycle
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def start(self):
        sweep_stale(self.prefix)
        _live_labs.add(self)
        br = self.bridge_ns
        self._add_ns(br)
        _run(["ip", "-n", br, "link", "set", "lo", "up"])
        _run(["ip", "-n", br, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"])
        _run(["ip", "-n", br, "link", "set", "br0", "up"])
        for h in self.hosts:
            self._add_ns(h.ns)
            _run(["ip", "-n", br, "link", "add", h.port, "type", "veth", "peer", "name", h.ifname, "netns", h.ns])
            _run(["ip", "-n", br, "link", "set", h.port, "master", "br0"])
            _run(["ip", "-n", br, "link", "set", h.port, "up"])
            _run(["ip", "-n", h.ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", h.ns, "addr", "add", f"{h.ip}/24", "dev", h.ifname])
            _run(["ip", "-n", h.ns, "link", "set", h.ifname, "up"])
        self._wait_links()

    def _add_ns(self, ns):
        _run(["ip", "netns", "add", ns])
        self._created.append(ns)

    def _wait_links(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        for h in self.hosts:
            while "LOWER_UP" not in _run(["ip", "-n", h.ns, "link", "show", h.ifname]).stdout:
                if time.monotonic() > deadline:
                    raise LabError(f"{h.ns}: {h.ifname} not up")
                time.sleep(0.01)

    def close(self):
        if self._closed:
            return
        self._closed = True
        for relay in list(self._relays):
            with contextlib.suppress(Exception):
                relay.close()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(5)
        live = [p for p in self._procs if p.poll() is None]
        _kill_pids([p.pid for p in live])
        for p in live:
            with contextlib.suppress(Exception):
                p.wait(5)
        for ns in reversed(self._created):
            _delete_netns(ns)
        _live_labs.discard(self)
        left = [ns for ns in list_netns() if ns.startswith(self.base + "-")]
        if left:
            raise LabError(f"namespaces left behind: {left}")

    @property
    def namespaces(self):
        return [self.bridge_ns] + [h.ns for h in self.hosts]

    def host(self, name) -> Host:
        if isinstance(name, Host):
            return name
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no host {name!r} in lab (hosts: {', '.join(self._by_name)})") from None

    __getitem__ = host

    # partitions
    def _group(self, group):
        if isinstance(group, (str, Host)):
            group = [group]
        return [self.host(h) for h in group]

    def partition(self, group1, group2):
        """Drops all traffic between every host of group1 and every host of group2, both ways, established
        connections too. Cumulative with earlier partitions; applied atomically per host."""
        g1, g2 = self._group(group1), self._group(group2)
        for x in g1:
            for y in g2:
                if x is y:
                    raise ValueError(f"{x.name} is on both sides of the partition")
                self._blocked.add(frozenset((x.name, y.name)))
        self._apply_rules({h.name for h in g1 + g2})

    def isolate(self, host):
        """Cuts `host` off from every other host."""
        h = self.host(host)
        self.partition([h], [o for o in self.hosts if o is not h])

    def heal(self, group1=None, group2=None):
        """Removes the partition between group1 and group2, or every partition when called without groups."""
        if group1 is None and group2 is None:
            touched = {n for pair in self._blocked for n in pair}
            self._blocked.clear()
        else:
            g1, g2 = self._group(group1), self._group(group2)
            pairs = {frozenset((x.name, y.name)) for x in g1 for y in g2}
            touched = {n for pair in pairs & self._blocked for n in pair}
            self._blocked -= pairs
        self._apply_rules(touched)

    def blocked_peers(self, host):
        h = self.host(host)
        return sorted((self.host(n) for pair in self._blocked if h.name in pair for n in pair if n != h.name),
                      key=lambda x: x.name)

    def _apply_rules(self, names):
        for name in names:
            h = self.host(name)
            peers = [self.host(n).ip for pair in self._blocked if name in pair for n in pair if n != name]
            # Recreate the table atomically: "add" makes the delete safe when it does not exist yet.
            script = f"add table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
            if peers:
                addrs = ", ".join(sorted(set(peers)))
                script += (f"table inet {NFT_TABLE} {{\n"
                           f"  chain input {{ type filter hook input priority -300; policy accept;\n"
                           f"    ip saddr {{ {addrs} }} drop\n  }}\n}}\n")
            proc = subprocess.run(["nsenter", f"--net={h.netns_path}", "--", "nft", "-f", "-"], input=script,
                                  capture_output=True, text=True, timeout=30)
            if proc.returncode != 0:
                raise LabError(f"nft in {h.ns} failed: {proc.stderr.strip()}\n{script}")

    def nft_ruleset(self, host):
        return self.host(host).run(["nft", "list", "ruleset"]).stdout

    # rate limits
    def limit_rate(self, host, rate, burst=None, latency="100ms", direction="both"):
        """tbf on `host`'s link: 'egress' (what it sends: its eth0), 'ingress' (what it receives: its bridge
        port) or 'both'. `rate` in bit/s or tc syntax ('1mbit'). `burst` in bytes (default ~20 ms of rate,
        at least 4 full frames). Replaces an earlier limit."""
        h = self.host(host)
        bits = parse_rate(rate)
        if burst is None:
            burst = max(4 * 1514, bits // 8 // 50)
        if direction not in ("both", "egress", "ingress"):
            raise ValueError("direction: both, egress or ingress")
        targets = []
        if direction in ("both", "egress"):
            targets.append((h.ns, h.ifname))
        if direction in ("both", "ingress"):
            targets.append((self.bridge_ns, h.port))
        for ns, dev in targets:
            _run(["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                  "rate", f"{bits}bit", "burst", str(burst), "latency", str(latency)])

    def clear_rate(self, host):
        h = self.host(host)
        for ns, dev in ((h.ns, h.ifname), (self.bridge_ns, h.port)):
            _run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"], check=False)

    # delay relay
    def _ensure_loop(self):
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(target=self._loop.run_forever, name=f"{self.base}-relay",
                                                 daemon=True)
            self._loop_thread.start()
        return self._loop

    def delay_relay(self, listen, target, delay, host=None, target_host=None):
        """A TCP relay listening on `listen` (ip, port; port 0 picks one) that forwards each connection to
        `target` (ip, port), holding every chunk `delay` seconds in each direction (so a round trip gains
        2*delay; throughput is not capped). The listening socket lives in `host`'s namespace (None: the
        caller's), outgoing connections in `target_host`'s (default: the same). Returns a Relay
        (`.address`, `.close()`, counters); closed with the lab."""
        ns = None if host is None else self.host(host).ns
        tns = ns if target_host is None else self.host(target_host).ns
        relay = Relay(self._ensure_loop(), listen, target, delay, ns, tns)
        relay.start()
        self._relays.append(relay)
        return relay


class Relay:
    """User-space TCP relay that delays each direction, with jitter (see Lab.delay_relay, set_delay)."""

    CHUNK = 65536
    QUEUE = 512   # chunks in flight per direction (backpressure beyond that)

    def __init__(self, loop, listen, target, delay, listen_ns, target_ns):
        self.loop = loop
        self.listen = tuple(listen)
        self.target = tuple(target)
        self.delays = {None: (float(delay), 0.0)}  # client address (None: any) -> (delay, jitter), in seconds
        self.listen_ns = listen_ns
        self.target_ns = target_ns
        self.address = None
        self.connections = 0
        self.bytes_forward = 0    # client -> target
        self.bytes_backward = 0   # target -> client
        self.errors = []
        self._server = None
        self._tasks = set()

    def start(self):
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    def set_delay(self, delay, jitter=0.0, source=None):
        """From now on (connections open included) each chunk from or to a client at address `source` (None:
        every client) is held `delay` ± `jitter` seconds (uniformly drawn; the order of the bytes is kept). The
        longest delay that applies wins."""
        self.delays[source] = (float(delay), float(jitter))

    def _hold(self, client):
        delay, jitter = max(self.delays.get(client, (0.0, 0.0)), self.delays[None])
        return max(0.0, delay + random.uniform(-jitter, jitter))

    async def _start(self):
        with in_netns(self.listen_ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self.listen)
        sock.listen(128)
        sock.setblocking(False)
        self.address = sock.getsockname()
        self._server = await asyncio.start_server(self._handle, sock=sock)

    def close(self):
        if self.loop.is_closed() or not self.loop.is_running():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(10)

    async def _close(self):
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, creader, cwriter):
        task = asyncio.current_task()
        self._tasks.add(task)
        self.connections += 1
        uwriter, pipes = None, []
        try:
            with in_netns(self.target_ns):
                usock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            usock.setblocking(False)
            try:
                await asyncio.wait_for(self.loop.sock_connect(usock, self.target), 30)
            except BaseException:
                usock.close()
                raise
            for s in (usock, cwriter.get_extra_info("socket")):
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ureader, uwriter = await asyncio.open_connection(sock=usock)
            client = cwriter.get_extra_info("peername")[0]
            pipes = [asyncio.ensure_future(self._pipe(creader, uwriter, "bytes_forward", client)),
                     asyncio.ensure_future(self._pipe(ureader, cwriter, "bytes_backward", client))]
            await asyncio.gather(*pipes)
        except (asyncio.CancelledError, ConnectionError, OSError, asyncio.TimeoutError) as e:
            if not isinstance(e, asyncio.CancelledError):
                self.errors.append(repr(e))
        finally:
            # Both directions finished before this task is: none is left suspended when the loop stops.
            for p in pipes:
                p.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in (cwriter, uwriter):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()
            self._tasks.discard(task)

    async def _pipe(self, reader, writer, counter, client):
        queue = asyncio.Queue(self.QUEUE)

        async def produce():
            due = 0.0
            while True:
                data = await reader.read(self.CHUNK)
                due = max(due, self.loop.time() + self._hold(client))  # jitter never reorders the stream
                await queue.put((due, data))
                if not data:
                    return

        async def consume():
            while True:
                due, data = await queue.get()
                wait = due - self.loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                setattr(self, counter, getattr(self, counter) + len(data))
                await writer.drain()

        producer = asyncio.ensure_future(produce())
        try:
            await consume()
            await producer
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)


@atexit.register
def _close_live_labs():
    for lab in list(_live_labs):
        with contextlib.suppress(Exception):
            lab.close()
