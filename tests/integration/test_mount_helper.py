"""mount-helpers/mount.fuse.hypernet: `mount -t fuse.hypernet HOME MOUNTPOINT -o ...` and fstab lines.

mount(8) looks for helpers only in /sbin (/sbin/fs.d, /sbin/fs), not on PATH, so the real-mount tests
install the repository's helper there for their duration and put back whatever was there before."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import helpers
from helpers import pid_alive, wait_until

HELPER = Path(__file__).resolve().parents[2] / "mount-helpers" / "mount.fuse.hypernet"
INSTALLED = Path("/sbin/mount.fuse.hypernet")


def helper_env():
    env = {k: v for k, v in os.environ.items() if k != "HYPERNET_HOME"}
    env["HYPERNET_BIN"] = helpers.hypernet_bin()
    return env


@pytest.fixture
def installed_helper():
    if os.geteuid() != 0:
        pytest.skip("installing a mount helper into /sbin needs root")
    backup = None
    if INSTALLED.exists() or INSTALLED.is_symlink():
        backup = INSTALLED.with_name(INSTALLED.name + ".before-test")
        os.replace(INSTALLED, backup)
    shutil.copy(HELPER, INSTALLED)
    os.chmod(INSTALLED, 0o755)
    try:
        yield INSTALLED
    finally:
        if backup is not None:
            os.replace(backup, INSTALLED)
        else:
            INSTALLED.unlink()


def mount_options(mountpoint):
    real = os.path.realpath(mountpoint)
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[1] == real and fields[2] == "fuse.hypernet":
                return fields[3].split(",")
    return None


def check_folder_and_umount(node):
    assert node.read_pid() is not None, "no daemon.pid after mount"
    path = node.p("f")
    helpers.write_file(path, b"hi\n")
    assert helpers.read_file(path) == b"hi\n"
    assert len(helpers.current_revision(path)) >= 12
    pid = node.pid
    subprocess.run(["umount", str(node.mount)], check=True, timeout=30)
    assert wait_until(lambda: not pid_alive(pid), 30), "daemon still running after umount"
    node.running = False
    assert not node.is_mounted()
    assert not (node.home / "daemon.pid").exists()


def test_mount_t_fuse_hypernet(make_node, installed_helper):
    node = make_node(start=False)
    node.running = True  # from here teardown must stop whatever the helper started
    proc = subprocess.run(["mount", "-t", "fuse.hypernet", str(node.home), str(node.mount),
                           "-o", "defaults,nosuid,nodev,noexec,_netdev,x-systemd.automount,allow_other"],
                          capture_output=True, text=True, env=helper_env(), stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 0, proc.stderr
    options = mount_options(node.mount)
    assert options is not None, f"{node.mount} is not a fuse.hypernet mount"
    assert "allow_other" in options and "default_permissions" in options
    check_folder_and_umount(node)


def test_fstab_line(make_node, installed_helper, tmp_path):
    node = make_node(start=False)
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{node.home} {node.mount} fuse.hypernet defaults,allow_other 0 0\n")
    node.running = True
    proc = subprocess.run(["mount", "--fstab", str(fstab), str(node.mount)], capture_output=True, text=True,
                          env=helper_env(), stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "allow_other" in (mount_options(node.mount) or [])
    check_folder_and_umount(node)


def test_helper_reports_errors(node_dir, installed_helper):
    proc = subprocess.run(["mount", "-t", "fuse.hypernet", str(node_dir / "home"), str(node_dir / "missing")],
                          capture_output=True, text=True, env=helper_env(), stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode != 0
    assert "mountpoint does not exist" in proc.stderr


@pytest.mark.parametrize("given, passed", [
    (["-o", "rw,defaults,auto,noauto,user,nouser,exec,noexec,suid,nosuid,dev,nodev,_netdev,nofail,x-a.b"], None),
    (["-o", "defaults,allow_other", "-o", "ro"], "allow_other,ro"),
    (["-n", "-v", "-oallow_other,x-systemd.requires=foo"], "allow_other"),
])
def test_option_filtering(given, passed):
    # -f (fake) makes the helper print the command it would run.
    proc = subprocess.run(["sh", str(HELPER), "/h", "/m", "-f", *given], capture_output=True, text=True,
                          env=helper_env(), timeout=10)
    assert proc.returncode == 0, proc.stderr
    expected = f"would run: {helpers.hypernet_bin()} --home /h mount /m" + (f" -o {passed}" if passed else "")
    assert proc.stdout.strip() == expected


def test_usage():
    proc = subprocess.run(["sh", str(HELPER), "/only-home"], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2 and "usage" in proc.stderr
