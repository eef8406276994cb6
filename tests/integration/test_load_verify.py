"""Conformance under load: stress-ng's file-system stressors and fio's verified writes on a mount.

Both tools check what they read back (`--verify`, fio's crc32c/md5 headers), so a pass means every byte
and every metadata result they verified was right while many workers hammered the mount at once. The CI
mode is bounded (about a minute for both); HYPERNET_LOAD_SECONDS=N runs each part for N seconds instead.
What is excluded, and why, is in docs/testing.md ("Conformance under load").
"""

import os
import shutil
import subprocess

import pytest

SECONDS = int(os.environ.get("HYPERNET_LOAD_SECONDS", "0")) or None

pytestmark = [
    pytest.mark.skipif(shutil.which("stress-ng") is None or shutil.which("fio") is None,
                       reason="stress-ng and fio are Debian packages in mount-helpers/deps.sh"),
    pytest.mark.timeout(600 + 3 * (SECONDS or 0)),
]

# The filesystem class of stress-ng 0.15, minus what docs/testing.md lists as excluded. One worker each,
# all at once on one mount. Sizes are capped so that a run stays far below the store's disk.
STRESSORS = [
    "access", "chattr", "chdir", "chmod", "chown", "copy-file", "dentry", "dir", "dirdeep", "dirmany",
    "dnotify", "dup", "fallocate", "fcntl", "file-ioctl", "filename", "flock", "fpunch", "fsize", "fstat",
    "getdent", "handle", "hdd", "inode-flags", "inotify", "io", "iomix", "lease", "link", "locka", "lockf",
    "lockofd", "mknod", "open", "rename", "symlink", "sync-file", "touch", "utime", "xattr",
]
STRESSOR_LIMITS = [
    "--hdd-bytes", "16M", "--iomix-bytes", "16M", "--fallocate-bytes", "16M",
    "--sync-file-bytes", "16M", "--dirdeep-inodes", "2000",
]

# Stressors that find a defect today: {stressor: reason}. Each runs alone under xfail(strict=True), so a
# fix turns it into an unexpected pass that asks for it to move back into STRESSORS.
KNOWN_FAILURES = {}


def stress_ng(mount, stressors, seconds, workdir):
    args = ["stress-ng", "--temp-path", str(mount), "--verify", "--timeout", f"{seconds}s",
            "--log-brief", *STRESSOR_LIMITS]
    for name in stressors:
        args += [f"--{name}", "1"]
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=seconds * 4 + 120)
    return proc.returncode, proc.stdout + proc.stderr


def assert_stress_ng_passed(rc, output):
    # 0: all passed; 3: a stressor skipped itself for want of a resource (e.g. an unsupported ioctl),
    # which the output names. 2 (a stressor failed or a verification mismatched) and anything else fail.
    failed = [line for line in output.splitlines() if "fail" in line.lower() and "failed: 0" not in line]
    assert rc in (0, 3) and not failed, f"stress-ng exited {rc}:\n{output[-6000:]}"


def test_stress_ng_filesystem_stressors_verify(node, tmp_path):
    rc, output = stress_ng(node.mount, STRESSORS, SECONDS or 20, tmp_path)
    assert_stress_ng_passed(rc, output)
    left = [name for name in os.listdir(node.mount) if name != ".hypernet"]
    assert left == [], f"stress-ng left {left} behind (its cleanup failed on the mount)"


@pytest.mark.parametrize("stressor", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=reason))
    for name, reason in sorted(KNOWN_FAILURES.items())
] or [pytest.param("none", marks=pytest.mark.skip(reason="no known failure"))])
def test_stress_ng_known_failure(node, tmp_path, stressor):
    rc, output = stress_ng(node.mount, [stressor], SECONDS or 10, tmp_path)
    assert_stress_ng_passed(rc, output)


FIO_JOBS = """\
[global]
directory={directory}
ioengine=psync
size={size}m
bs_unaligned=0
numjobs=2
group_reporting=0
verify_fatal=1
verify_dump=0
do_verify=1
end_fsync=1

[seq-md5]
rw=write
bs=64k
verify=md5

[rand-crc32c]
rw=randwrite
bsrange=4k-128k
verify=crc32c
randrepeat=1
random_generator=tausworthe64

[randrw-crc32c]
rw=randrw
rwmixread=30
bs=16k
verify=crc32c
verify_backlog=64
fsync=16
"""


def run_fio(job_file, *extra):
    # In the job file's directory: fio leaves its verify state files (*-verify.state) in the working one.
    proc = subprocess.run(["fio", "--output-format=normal", *extra, str(job_file)], capture_output=True,
                          text=True, timeout=900 + 3 * (SECONDS or 0), cwd=job_file.parent)
    assert proc.returncode == 0 and "verify:" not in proc.stderr, \
        f"fio {' '.join(extra)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_fio_verified_writes_survive_a_restart(node, tmp_path):
    """Sequential (md5) and random (crc32c) writes by two jobs each verify as they go, and again after the
    daemon was stopped and started (fio --verify_only re-reads every block and checks its header)."""
    directory = node.p("fio")
    os.mkdir(directory)
    # The long mode writes more rather than loops: a verify_only pass checks what the last loop wrote.
    size = 8 * max(1, (SECONDS or 0) // 10)
    job_file = tmp_path / "verify.fio"
    job_file.write_text(FIO_JOBS.format(directory=directory, size=size))
    run_fio(job_file)
    node.restart()
    # A mixed read/write job cannot be verified afterwards (fio refuses it even on a native file system).
    run_fio(job_file, "--verify_only", "--section=seq-md5", "--section=rand-crc32c")
