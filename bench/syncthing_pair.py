#!/usr/bin/env python3
"""A Syncthing anchor for Hypernet's sync benchmarks: two Syncthing instances on loopback, measured in the
same run as Hypernet so the figures are comparable on the same machine.

Module use:

    from syncthing_pair import SyncthingPair
    with SyncthingPair("/tmp/st-work") as pair:
        seconds = pair.propagate_small_change()
        seconds = pair.propagate_file(256 << 20)
        wire = pair.bytes_transferred()    # {"a": {"in": .., "out": ..}, "b": {...}}
        pair.version                       # e.g. "v1.19.2-ds1"

CLI:  python3 bench/syncthing_pair.py [--runs N] [--big-mib 256] [--big-runs M] [--dir DIR]
prints JSON lines (one per measurement kind, medians) on stdout, progress on stderr.

Setup: each instance gets its own home (`syncthing generate --home=DIR --no-default-folder`), whose
config.xml is then edited before the first start (no REST restart dance): GUI/REST on 127.0.0.1:<free port>
with a known API key, sync protocol on tcp://127.0.0.1:<free port> only, global and local discovery, relays,
NAT traversal, usage reporting, crash reporting and auto-upgrade off, the peer device added with its static
address, one shared `sendreceive` folder with the watcher on and `fsWatcherDelayS` = 1 (the lowest this
Syncthing accepts: before v1.21 the setting is an integer and 0 or less means "watcher off, delay 10"),
rescan interval one day. `setLowPriority` is off so Syncthing is not niced below the system under test.
Processes are started with `serve --no-browser --no-restart --no-upgrade` and STMONITORED=yes (one
process each: without it 1.19 forks a monitor parent even with --no-restart), die with the harness (PR_SET_PDEATHSIG) and are killed by PID on exit, exception or SIGTERM.

Installs nothing; needs `syncthing` on PATH (`apt-get install -y syncthing`). Standard library only.
"""

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

FOLDER_ID = "hnbench"
WATCHER_DELAY_S = 1          # minimum accepted by Syncthing < 1.21 (integer field; <= 0 disables the watcher)
RESCAN_INTERVAL_S = 86400    # "long": only the watcher should trigger scans during a measurement
POLL_S = 0.002               # how often the harness polls B's local file
SMALL_FILE_SIZE = 1 << 20    # the existing file that propagate_small_change() modifies
SMALL_CHANGE = 4096


class SyncthingError(RuntimeError):
    pass


def syncthing_binary() -> str:
    path = shutil.which("syncthing")
    if not path:
        raise SyncthingError("syncthing is not on PATH (install it: apt-get install -y syncthing)")
    return path


def syncthing_version(binary=None) -> str:
    out = subprocess.run([binary or syncthing_binary(), "--version"], capture_output=True, text=True,
                         check=True).stdout.strip()
    return out  # e.g. 'syncthing v1.19.2-ds1 "Fermium Flea" (go1.19.8 linux-amd64) ...'


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the tiny race with other processes is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """preexec_fn: SIGKILL the child if the harness dies without running its cleanup."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _children(pid):
    out = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    return out


def _sha256_file(path, chunk=1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                return h.hexdigest()
            h.update(block)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[: 1 << 20]):]


def _set(parent, tag, text):
    el = parent.find(tag)
    if el is None:
        el = ET.SubElement(parent, tag)
    el.text = str(text)
    return el


class Instance:
    """One Syncthing instance: home, folder, ports, API key, process."""

    def __init__(self, name: str, root: Path, binary: str):
        self.name = name
        self.root = root
        self.home = root / "home"
        self.folder = root / "folder"
        self.log = root / "syncthing.log"
        self.binary = binary
        self.api_key = secrets.token_hex(16)
        self.gui_port = free_port()
        self.sync_port = free_port()
        self.device_id = None
        self.proc = None
        self._log_file = None

    @property
    def sync_address(self):
        return f"tcp://127.0.0.1:{self.sync_port}"

    @property
    def gui_url(self):
        return f"http://127.0.0.1:{self.gui_port}"

    def generate(self):
        self.root.mkdir(parents=True, exist_ok=True)
        self.folder.mkdir()
        (self.folder / ".stfolder").mkdir()  # folder marker: Syncthing refuses a folder without it
        out = subprocess.run([self.binary, "generate", f"--home={self.home}", "--no-default-folder"],
                             capture_output=True, text=True, env=self._env())
        if out.returncode != 0:
            raise SyncthingError(f"syncthing generate failed: {out.stdout}{out.stderr}")
        for line in (out.stdout + out.stderr).splitlines():
            if "Device ID:" in line:
                self.device_id = line.split("Device ID:", 1)[1].strip()
        if not self.device_id:
            out = subprocess.run([self.binary, "serve", f"--home={self.home}", "--device-id"],
                                 capture_output=True, text=True, check=True, env=self._env())
            self.device_id = out.stdout.strip()

    def configure(self, peer: "Instance"):
        path = self.home / "config.xml"
        tree = ET.parse(path)
        cfg = tree.getroot()

        gui = cfg.find("gui")
        gui.set("enabled", "true")
        gui.set("tls", "false")
        _set(gui, "address", f"127.0.0.1:{self.gui_port}")
        _set(gui, "apikey", self.api_key)

        opts = cfg.find("options")
        for el in opts.findall("listenAddress") + opts.findall("globalAnnounceServer"):
            opts.remove(el)
        ET.SubElement(opts, "listenAddress").text = self.sync_address
        ET.SubElement(opts, "globalAnnounceServer").text = "default"
        for tag, value in [
            ("globalAnnounceEnabled", "false"),
            ("localAnnounceEnabled", "false"),
            ("relaysEnabled", "false"),
            ("natEnabled", "false"),
            ("startBrowser", "false"),
            ("urAccepted", "-1"),            # usage reporting: declined for good
            ("urSeen", "3"),
            ("crashReportingEnabled", "false"),
            ("autoUpgradeIntervalH", "0"),
            ("restartOnWakeup", "false"),
            ("reconnectionIntervalS", "1"),   # first dial as soon as possible
            ("setLowPriority", "false"),      # don't nice Syncthing below the system it is compared with
            ("stunServer", ""),
            ("announceLANAddresses", "false"),
        ]:
            _set(opts, tag, value)

        # Devices: keep our own (generated) entry, add the peer with its static address.
        for dev in cfg.findall("device"):
            if dev.get("id") != self.device_id:
                cfg.remove(dev)
        me = cfg.find(f"device[@id='{self.device_id}']")
        me.set("name", self.name)
        peer_el = ET.Element("device", {"id": peer.device_id, "name": peer.name, "compression": "metadata",
                                        "introducer": "false", "skipIntroductionRemovals": "false",
                                        "introducedBy": ""})
        ET.SubElement(peer_el, "address").text = peer.sync_address
        ET.SubElement(peer_el, "paused").text = "false"
        ET.SubElement(peer_el, "autoAcceptFolders").text = "false"
        _insert_after(cfg, me, peer_el)

        for fol in cfg.findall("folder"):
            cfg.remove(fol)
        folder = ET.Element("folder", {
            "id": FOLDER_ID, "label": FOLDER_ID, "path": str(self.folder), "type": "sendreceive",
            "rescanIntervalS": str(RESCAN_INTERVAL_S), "fsWatcherEnabled": "true",
            "fsWatcherDelayS": str(WATCHER_DELAY_S), "ignorePerms": "false", "autoNormalize": "true"})
        ET.SubElement(folder, "filesystemType").text = "basic"
        for dev_id in (self.device_id, peer.device_id):
            d = ET.SubElement(folder, "device", {"id": dev_id, "introducedBy": ""})
            ET.SubElement(d, "encryptionPassword").text = ""
        ET.SubElement(folder, "paused").text = "false"
        ET.SubElement(folder, "markerName").text = ".stfolder"
        _insert_after(cfg, peer_el, folder)
        tree.write(path)

    def _env(self):
        env = dict(os.environ)
        # STMONITORED=yes: run the syncthing process itself, without the monitor parent that `serve`
        # otherwise forks even with --no-restart (a monitor killed hard would orphan its child).
        env.update(STMONITORED="yes", STNOUPGRADE="1", STNORESTART="1", STNODEFAULTFOLDER="1", STTRACE="",
                   HOME=str(self.root))  # nothing of the harness user's ~/.config is touched
        env.pop("STGUIADDRESS", None)
        env.pop("STGUIAPIKEY", None)
        return env

    def start(self):
        self._log_file = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--no-browser", "--no-restart", "--no-upgrade", f"--home={self.home}",
             "--logflags=3"],
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            env=self._env(), preexec_fn=_die_with_parent)

    def stop(self, timeout=5.0):
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            children = _children(proc.pid)  # none expected (STMONITORED), but never leave one behind
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # --- REST -----------------------------------------------------------------------------------------------

    def api(self, method, path, body=None, timeout=10.0):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.gui_url + path, data=data, method=method,
                                     headers={"X-API-Key": self.api_key, "Content-Type": "application/json"})
        # The REST API is on loopback: make sure no proxy from the environment is used.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.strip() else None

    def get(self, path):
        return self.api("GET", path)

    def log_tail(self, n=30):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _insert_after(parent, ref, new):
    children = list(parent)
    parent.insert(children.index(ref) + 1, new)


class SyncthingPair:
    """Two Syncthing instances (a, b) on loopback sharing one folder. Use as a context manager."""

    def __init__(self, workdir=None, connect_timeout=60.0, keep=False):
        self.binary = syncthing_binary()
        self.version_line = syncthing_version(self.binary)
        self.version = self.version_line.split()[1] if len(self.version_line.split()) > 1 else self.version_line
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="syncthing-pair-"))
        self.connect_timeout = connect_timeout
        self.keep = keep
        self.a = self.b = None
        self._small_file = None
        self._prev_sigterm = None
        self.settings = {"fsWatcherDelayS": WATCHER_DELAY_S, "rescanIntervalS": RESCAN_INTERVAL_S,
                         "setLowPriority": False, "compression": "metadata", "poll_interval_s": POLL_S}

    # --- lifecycle ----------------------------------------------------------------------------------------

    def __enter__(self):
        self._install_sigterm()
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _install_sigterm(self):
        # SIGTERM -> SystemExit, so `with` blocks unwind and kill the instances (main thread only).
        if self._prev_sigterm is None and hasattr(signal, "SIGTERM"):
            try:
                self._prev_sigterm = signal.getsignal(signal.SIGTERM)
                if self._prev_sigterm in (signal.SIG_DFL, None):
                    def handler(signum, frame):
                        raise SystemExit(128 + signum)
                    signal.signal(signal.SIGTERM, handler)
                else:
                    self._prev_sigterm = None  # the caller has its own handler: leave it alone
            except ValueError:  # not the main thread
                self._prev_sigterm = None

    def start(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="pair-", dir=self.workdir))
        self.a = Instance("st-a", root / "a", self.binary)
        self.b = Instance("st-b", root / "b", self.binary)
        for inst in (self.a, self.b):
            inst.generate()
        self.a.configure(self.b)
        self.b.configure(self.a)
        for inst in (self.a, self.b):
            inst.start()
        self._wait_rest()
        self._check_config()
        self._wait_connected()
        self.wait_idle()

    def close(self):
        for inst in (self.a, self.b):
            if inst is not None:
                inst.stop()
        if self._prev_sigterm is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, self._prev_sigterm)
            self._prev_sigterm = None
        if not self.keep:
            target = self.workdir if self._own_workdir else (self.a.root.parent if self.a else None)
            if target is not None:
                shutil.rmtree(target, ignore_errors=True)

    # --- waiting ------------------------------------------------------------------------------------------

    def _check_alive(self):
        for inst in (self.a, self.b):
            if not inst.alive():
                raise SyncthingError(f"syncthing {inst.name} exited ({inst.proc and inst.proc.returncode}):\n"
                                     + inst.log_tail())

    def _wait_rest(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        for inst in (self.a, self.b):
            while True:
                self._check_alive()
                try:
                    status = inst.get("/rest/system/status")
                    if status.get("myID") != inst.device_id:
                        raise SyncthingError(f"{inst.name}: REST reports device {status.get('myID')}, "
                                             f"expected {inst.device_id}")
                    break
                except (urllib.error.URLError, ConnectionError, OSError):
                    if time.monotonic() > deadline:
                        raise SyncthingError(f"{inst.name}: REST API not up in {timeout}s\n" + inst.log_tail())
                    time.sleep(0.05)

    def _check_config(self):
        """Syncthing silently rewrites settings it does not accept: read back what is in force."""
        for inst in (self.a, self.b):
            fol = inst.get(f"/rest/config/folders/{FOLDER_ID}")
            if not fol.get("fsWatcherEnabled") or fol.get("fsWatcherDelayS") != WATCHER_DELAY_S:
                raise SyncthingError(f"{inst.name}: watcher settings not accepted: "
                                     f"enabled={fol.get('fsWatcherEnabled')} delay={fol.get('fsWatcherDelayS')}")
            opts = inst.get("/rest/config/options")
            bad = {k: opts.get(k) for k, want in [("globalAnnounceEnabled", False), ("localAnnounceEnabled", False),
                                                  ("relaysEnabled", False), ("natEnabled", False),
                                                  ("crashReportingEnabled", False), ("autoUpgradeIntervalH", 0)]
                   if opts.get(k) != want}
            if opts.get("urAccepted", 0) > 0:
                bad["urAccepted"] = opts.get("urAccepted")
            if opts.get("listenAddresses") != [inst.sync_address]:
                bad["listenAddresses"] = opts.get("listenAddresses")
            if bad:
                raise SyncthingError(f"{inst.name}: options not in force: {bad}")
        self.settings["fsWatcherDelayS"] = fol.get("fsWatcherDelayS")

    def _wait_connected(self):
        deadline = time.monotonic() + self.connect_timeout
        while True:
            self._check_alive()
            ok = True
            for inst, peer in ((self.a, self.b), (self.b, self.a)):
                conns = inst.get("/rest/system/connections")["connections"]
                if not conns.get(peer.device_id, {}).get("connected"):
                    ok = False
            if ok:
                return
            if time.monotonic() > deadline:
                raise SyncthingError(f"devices not connected within {self.connect_timeout}s\n"
                                     f"--- a:\n{self.a.log_tail()}\n--- b:\n{self.b.log_tail()}")
            time.sleep(0.1)

    def wait_idle(self, timeout=120.0):
        """Both folders idle, nothing needed, and each side sees the other fully in sync."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            done = True
            for inst, peer in ((self.a, self.b), (self.b, self.a)):
                st = inst.get(f"/rest/db/status?folder={FOLDER_ID}")
                if st.get("state") != "idle" or st.get("needTotalItems", 0) or st.get("errors", 0):
                    done = False
                    break
                comp = inst.get(f"/rest/db/completion?folder={FOLDER_ID}&device={peer.device_id}")
                if comp.get("completion", 0) < 100 or comp.get("needItems", 0):
                    done = False
                    break
            if done:
                return
            if time.monotonic() > deadline:
                raise SyncthingError(f"folders not idle within {timeout}s")
            time.sleep(0.05)

    # --- measurements -------------------------------------------------------------------------------------

    def _poll(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        checks = 0
        while True:
            if predicate():
                return time.perf_counter()
            checks += 1
            if checks % 250 == 0:
                self._check_alive()
                if time.monotonic() > deadline:
                    raise SyncthingError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(POLL_S)

    def _ensure_small_file(self):
        if self._small_file is None:
            name = "small.bin"
            data = os.urandom(SMALL_FILE_SIZE)
            fd = os.open(self.a.folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            target = self.b.folder / name
            self._poll(lambda: target.exists() and target.read_bytes() == data, 60, "the small file on b")
            self.wait_idle()
            self._small_file = name

    def propagate_small_change(self, timeout=60.0) -> float:
        """Overwrite a random 4 KiB region of an existing 1 MiB file on a (write + fsync + close); seconds
        until b's copy holds the new bytes (b's file polled every 2 ms)."""
        self._ensure_small_file()
        self.wait_idle()
        offset = random.randrange(0, SMALL_FILE_SIZE // SMALL_CHANGE) * SMALL_CHANGE
        new = os.urandom(SMALL_CHANGE)
        b_path = self.b.folder / self._small_file

        def arrived():
            try:
                with open(b_path, "rb") as f:
                    return os.pread(f.fileno(), SMALL_CHANGE, offset) == new
            except FileNotFoundError:
                return False

        start = time.perf_counter()
        fd = os.open(self.a.folder / self._small_file, os.O_WRONLY)
        try:
            os.pwrite(fd, new, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        end = self._poll(arrived, timeout, "the 4 KiB change on b")
        return end - start

    def propagate_file(self, size: int, timeout=600.0, data=None) -> float:
        """A new file of `size` random bytes written on a (1 MiB writes, fsync, close); seconds from the
        first write until b's copy has the full size and the same SHA-256 (the hash is checked after the
        clock stops; a mismatch keeps waiting for a later version)."""
        self.wait_idle()
        data = data if data is not None else os.urandom(size)
        want = hashlib.sha256(data).hexdigest()
        name = f"big-{secrets.token_hex(4)}.bin"
        b_path = self.b.folder / name
        start = time.perf_counter()
        fd = os.open(self.a.folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.last_write_seconds = time.perf_counter() - start
        deadline = time.monotonic() + timeout
        seen = None
        while True:
            def complete():
                try:
                    st = os.stat(b_path)
                except FileNotFoundError:
                    return False
                return st.st_size == size and (st.st_mtime_ns, st.st_ino) != seen
            end = self._poll(complete, max(1.0, deadline - time.monotonic()), f"{name} on b")
            st = os.stat(b_path)
            seen = (st.st_mtime_ns, st.st_ino)
            if _sha256_file(b_path) == want:
                return end - start
            if time.monotonic() > deadline:
                raise SyncthingError(f"{name} on b has the right size but not the right content")

    def bytes_transferred(self) -> dict:
        """Wire bytes since start, per instance, from /rest/system/connections totals."""
        out = {}
        for key, inst in (("a", self.a), ("b", self.b)):
            total = inst.get("/rest/system/connections")["total"]
            out[key] = {"in": int(total["inBytesTotal"]), "out": int(total["outBytesTotal"])}
        return out

    @staticmethod
    def wire_delta(before: dict, after: dict) -> dict:
        return {k: {d: after[k][d] - before[k][d] for d in ("in", "out")} for k in after}


# --- CLI ----------------------------------------------------------------------------------------------------

def _log(msg):
    print(f"syncthing_pair: {msg}", file=sys.stderr, flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="small changes to time (median reported; default 10)")
    ap.add_argument("--big-mib", type=int, default=256, help="size of the big file in MiB (default 256)")
    ap.add_argument("--big-runs", type=int, default=3, help="big files to time (median reported; default 3)")
    ap.add_argument("--dir", default=None, help="work directory (default: a new one under $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep homes, folders and logs")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    with SyncthingPair(args.dir, keep=args.keep) as pair:
        _log(f"{pair.version_line}; connected in {time.monotonic() - t0:.1f}s; work dir {pair.a.root.parent}")
        base = pair.bytes_transferred()
        common = {"tool": "syncthing", "version": pair.version, "settings": pair.settings}

        small, small_wire = [], []
        pair._ensure_small_file()
        for i in range(args.runs):
            time.sleep(random.uniform(0.05, 0.5))  # don't phase-lock with the watcher's 1 s tick
            before = pair.bytes_transferred()
            small.append(pair.propagate_small_change())
            pair.wait_idle()
            small_wire.append(pair.wire_delta(before, pair.bytes_transferred()))
            _log(f"small change {i + 1}/{args.runs}: {small[-1]:.3f}s")
        print(json.dumps({**common, "metric": "small_change_propagation_s", "median": statistics.median(small),
                          "min": min(small), "max": max(small), "runs": small, "change_bytes": SMALL_CHANGE,
                          "file_bytes": SMALL_FILE_SIZE,
                          "wire_bytes_a_out_median": statistics.median(w["a"]["out"] for w in small_wire),
                          "wire_bytes_b_out_median": statistics.median(w["b"]["out"] for w in small_wire)}),
              flush=True)

        size = args.big_mib << 20
        big, big_wire, writes = [], [], []
        data = os.urandom(size)  # made before timing; one buffer, a fresh name per run (new file each time)
        for i in range(args.big_runs):
            data = os.urandom(size) if i else data  # fresh content so no block is already known to b
            before = pair.bytes_transferred()
            big.append(pair.propagate_file(size, data=data))
            writes.append(pair.last_write_seconds)
            pair.wait_idle()
            big_wire.append(pair.wire_delta(before, pair.bytes_transferred()))
            _log(f"big file {i + 1}/{args.big_runs} ({args.big_mib} MiB): {big[-1]:.2f}s "
                 f"(write+fsync on a {writes[-1]:.2f}s)")
        med = statistics.median(big)
        print(json.dumps({**common, "metric": "big_file_propagation_s", "median": med, "min": min(big),
                          "max": max(big), "runs": big, "bytes": size, "mib_per_s": (size / (1 << 20)) / med,
                          "write_fsync_s_median": statistics.median(writes),
                          "wire_bytes_a_out_median": statistics.median(w["a"]["out"] for w in big_wire),
                          "wire_bytes_b_out_median": statistics.median(w["b"]["out"] for w in big_wire)}),
              flush=True)

        total = pair.wire_delta(base, pair.bytes_transferred())
        print(json.dumps({**common, "metric": "wire_bytes_total", "a": total["a"], "b": total["b"],
                          "elapsed_s": time.monotonic() - t0}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
