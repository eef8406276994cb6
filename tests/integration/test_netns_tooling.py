"""Tests of the network-namespace lab (netns.py) that multi-node tests build on: reachability, partition and
heal, tbf rate limits, the delay relay, mount-namespace behaviour of popen/run, and cleanup.

Skipped (not failed) when not root or when network namespaces cannot be made here; the partition tests also
need nft, the rate tests tc. Traffic stays inside namespaces the tests create.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import netns  # noqa: E402
from netns import Lab  # noqa: E402

PREFIX = "hntest"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(not (shutil.which("ip") and shutil.which("nsenter")), reason="needs iproute2 and nsenter"),
]
needs_nft = pytest.mark.skipif(not shutil.which("nft"), reason="needs nftables (nft)")
needs_tc = pytest.mark.skipif(not shutil.which("tc"), reason="needs tc (iproute2)")

_AVAILABLE = None

SERVER = r"""
import socket, sys, threading
ip, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port))
s.listen(64)
print(s.getsockname()[1], flush=True)
def serve(c):
    with c:
        total = 0
        while True:
            d = c.recv(65536)
            if not d:
                break
            total += len(d)
            if mode == "echo":
                c.sendall(d)
        if mode == "sink":
            c.sendall(str(total).encode())
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def _probe():
    global _AVAILABLE
    if _AVAILABLE is None:
        _AVAILABLE = netns.available()
    ok, reason = _AVAILABLE
    if not ok:
        pytest.skip(f"network namespaces unavailable: {reason}")


@pytest.fixture
def lab():
    _probe()
    with Lab(PREFIX, hosts=3) as the_lab:
        yield the_lab
    assert not [ns for ns in netns.list_netns() if ns.startswith(the_lab.base)]


def start_server(host, mode="echo", port=0):
    """A tiny Python TCP server in `host` (echo, or sink: replies with the byte count at EOF); its port."""
    proc = host.popen([sys.executable, "-c", SERVER, host.ip, str(port), mode], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip().isdigit(), f"server in {host.ns} did not start"
    return int(line)


def echo_ok(sock, payload=b"ping", timeout=2.0):
    sock.settimeout(timeout)
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got == payload


def can_connect(src, dst_ip, port, timeout=1.0):
    try:
        with src.connect((dst_ip, port), timeout=timeout) as s:
            return echo_ok(s, timeout=timeout)
    except OSError:
        return False


def send_to_sink(src, address, size, timeout=30.0):
    """Seconds to push `size` bytes to a sink server and get its byte count back."""
    data = os.urandom(size)
    start = time.perf_counter()
    with src.connect(address, timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            chunk = s.recv(64)
            if not chunk:
                break
            reply += chunk
    elapsed = time.perf_counter() - start
    assert int(reply) == size
    return elapsed


# --- reachability and namespaces -----------------------------------------------------------------------

def test_hosts_reach_each_other_over_tcp(lab):
    ports = {h.name: start_server(h) for h in lab.hosts}
    for src in lab.hosts:
        for dst in lab.hosts:
            if src is not dst:
                assert can_connect(src, dst.ip, ports[dst.name]), f"{src.name} -> {dst.name}"
    assert lab.host("a").ip != lab.host("b").ip
    assert f"{lab.host('b').ip}/24" in lab.host("b").run("ip -br addr show dev eth0").stdout


def test_hosts_are_isolated_from_the_root_namespace(lab):
    a = lab.host("a")
    routes = a.run(["ip", "route"]).stdout
    assert "default" not in routes
    # The harness (root namespace) has no route into the lab.
    assert "10.213." not in subprocess.run(["ip", "route"], capture_output=True, text=True).stdout


def test_popen_keeps_the_mount_namespace_and_run_does_not(lab):
    a = lab.host("a")
    own_mnt, own_net = os.readlink("/proc/self/ns/mnt"), os.readlink("/proc/self/ns/net")
    proc = a.popen(["sh", "-c", "readlink /proc/self/ns/mnt; readlink /proc/self/ns/net"],
                   stdout=subprocess.PIPE, text=True)
    mnt, net = proc.communicate(timeout=10)[0].split()
    assert mnt == own_mnt, "popen must not give the process a private mount namespace (FUSE mounts)"
    assert net != own_net
    run_mnt, run_net = a.run("readlink /proc/self/ns/mnt; readlink /proc/self/ns/net").stdout.split()
    assert run_net == net
    assert run_mnt != own_mnt  # ip netns exec: private mount namespace, documented in netns.py


# --- partitions ------------------------------------------------------------------------------------------

@needs_nft
def test_partition_cuts_new_and_established_traffic_both_ways_and_heal_restores(lab):
    a, b, c = lab.host("a"), lab.host("b"), lab.host("c")
    ports = {h.name: start_server(h) for h in lab.hosts}
    ba = b.connect((a.ip, ports["a"]))
    ab = a.connect((b.ip, ports["b"]))
    assert echo_ok(ba) and echo_ok(ab)

    lab.partition(["a"], ["b"])

    for conn in (ba, ab):  # established connections: nothing comes back
        start = time.monotonic()
        conn.settimeout(1.0)
        conn.sendall(b"lost")
        with pytest.raises(socket.timeout):
            conn.recv(16)
        assert time.monotonic() - start < 1.5
    for src, dst in ((b, a), (a, b)):  # new connections fail within ~1 s
        start = time.monotonic()
        assert not can_connect(src, dst.ip, ports[dst.name], timeout=1.0), f"{src.name} -> {dst.name}"
        assert time.monotonic() - start < 1.5
    for dst in (a, b):  # the third host still reaches both sides, and they reach it
        assert can_connect(c, dst.ip, ports[dst.name])
        assert can_connect(dst, c.ip, ports["c"])

    lab.heal()

    assert can_connect(b, a.ip, ports["a"]) and can_connect(a, b.ip, ports["b"])
    for conn in (ba, ab):  # TCP retransmits the data sent during the partition
        conn.settimeout(20.0)
        got = b""
        while len(got) < 4:
            got += conn.recv(16)
        assert got == b"lost"
        conn.close()
    assert "drop" not in lab.nft_ruleset("a") and "drop" not in lab.nft_ruleset("b")


@needs_nft
def test_isolate_and_partial_heal(lab):
    a, b, c = lab.host("a"), lab.host("b"), lab.host("c")
    ports = {h.name: start_server(h) for h in lab.hosts}
    lab.isolate("a")
    assert [h.name for h in lab.blocked_peers("a")] == ["b", "c"]
    assert not can_connect(b, a.ip, ports["a"], timeout=0.5)
    assert not can_connect(a, c.ip, ports["c"], timeout=0.5)
    assert can_connect(b, c.ip, ports["c"])
    lab.heal("a", "b")
    assert can_connect(b, a.ip, ports["a"]) and can_connect(a, b.ip, ports["b"])
    assert not can_connect(c, a.ip, ports["a"], timeout=0.5)
    lab.heal()
    assert can_connect(c, a.ip, ports["a"])


# --- rate limits -----------------------------------------------------------------------------------------

@needs_tc
def test_tbf_limits_throughput_both_ways(lab):
    a, b, c = lab.host("a"), lab.host("b"), lab.host("c")
    sink = {h.name: start_server(h, "sink") for h in (a, b)}
    size = 200_000
    assert send_to_sink(c, (b.ip, sink["b"]), size) < 1.0  # unlimited baseline
    lab.limit_rate("a", "1mbit")
    out = send_to_sink(a, (b.ip, sink["b"]), size)    # a's egress
    into = send_to_sink(c, (a.ip, sink["a"]), size)   # a's ingress
    # 200 KB at 1 Mbit/s is 1.6 s of payload alone.
    assert 1.0 < out < 10.0, out
    assert 1.0 < into < 10.0, into
    assert send_to_sink(c, (b.ip, sink["b"]), size) < 1.0  # other links untouched
    lab.clear_rate("a")
    assert send_to_sink(a, (b.ip, sink["b"]), size) < 1.0


def test_parse_rate():
    assert netns.parse_rate("1mbit") == 1_000_000
    assert netns.parse_rate("500kbit") == 500_000
    assert netns.parse_rate("125kbps") == 1_000_000
    assert netns.parse_rate(2_000_000) == 2_000_000
    with pytest.raises(ValueError):
        netns.parse_rate("fast")


# --- delay relay -----------------------------------------------------------------------------------------

def _rtt(sock, rounds=3):
    best = None
    for _ in range(rounds):
        start = time.perf_counter()
        assert echo_ok(sock, timeout=5.0)
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best


def test_delay_relay_adds_its_delay_each_way(lab):
    a, b, c = lab.host("a"), lab.host("b"), lab.host("c")
    port = start_server(a)
    with c.connect((a.ip, port)) as direct:
        assert _rtt(direct) < 0.05
    relay = lab.delay_relay((b.ip, 0), (a.ip, port), 0.2, host="b")
    assert relay.address[0] == b.ip and relay.address[1] > 0
    with c.connect(relay.address) as via:
        rtt = _rtt(via)
        assert 0.4 <= rtt < 0.65, rtt
        payload = os.urandom(1 << 20)  # bulk data arrives intact and is not throttled to a chunk per delay
        start = time.perf_counter()
        assert echo_ok(via, payload, timeout=10.0)
        assert time.perf_counter() - start < 2.0
    assert relay.connections == 1 and relay.bytes_forward >= (1 << 20)


def test_delay_relay_from_the_harness_into_a_namespace(lab):
    a = lab.host("a")
    port = start_server(a)
    relay = lab.delay_relay(("127.0.0.1", 0), (a.ip, port), 0.05, target_host="a")
    with socket.create_connection(relay.address, timeout=5) as s:
        assert 0.1 <= _rtt(s) < 0.3
    relay.close()
    with pytest.raises(OSError):
        socket.create_connection(relay.address, timeout=1).close()


# --- cleanup ---------------------------------------------------------------------------------------------

def test_cleanup_after_an_exception_leaves_nothing():
    _probe()
    procs = []
    with pytest.raises(RuntimeError, match="boom"):
        with Lab(PREFIX, hosts=2) as lab:
            base = lab.base
            procs.append(lab.host("a").popen(["sleep", "600"]))
            # a process the lab did not start itself is found with `ip netns pids`
            lab.host("b").run("setsid sleep 600 >/dev/null 2>&1 < /dev/null &")
            assert len(netns.netns_pids(lab.host("b").ns)) == 1
            if shutil.which("nft"):
                lab.partition("a", "b")
            if shutil.which("tc"):
                lab.limit_rate("a", "10mbit")
            lab.delay_relay((lab.host("a").ip, 0), (lab.host("b").ip, 1), 0.01, host="a")
            raise RuntimeError("boom")
    assert not [ns for ns in netns.list_netns() if ns.startswith(base)]
    assert procs[0].poll() is not None


def test_sweep_stale_removes_labs_of_dead_processes_only():
    _probe()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{PREFIX}-{dead.pid}.0-a"
    live = f"{PREFIX}-{os.getpid()}.999-a"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    subprocess.run(["ip", "netns", "add", live], check=True)
    try:
        removed = netns.sweep_stale(PREFIX)
        assert stale in removed and live not in removed
        names = netns.list_netns()
        assert stale not in names and live in names
    finally:
        subprocess.run(["ip", "netns", "delete", live])
        subprocess.run(["ip", "netns", "delete", stale], stderr=subprocess.DEVNULL)
