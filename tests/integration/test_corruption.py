"""Damaged packs (issue 2, "Crash safety"; issue 14, item 8): the node mounts, the affected file reads EIO (never
wrong bytes, never a crash), other files still read, the log names the damaged object and `hypernet fsck` names
the affected files."""

import errno
import os
import re

import pytest

from helpers import pack_sizes, random_bytes, read_file, write_file

VICTIM_SIZE = 1 << 20
# A log line about the damage that names the object: a content id (hex) or the pack file.
NAMES_OBJECT = re.compile(r"(?i)(corrupt|authenticat|integrity|checksum|mismatch|truncat|damaged|invalid|short)"
                          r".*([0-9a-f]{16,}|\.pack)|([0-9a-f]{16,}|\.pack).*(corrupt|authenticat|integrity|checksum|"
                          r"mismatch|truncat|damaged|invalid|short)")


def flip(path, at, count):
    with open(path, "r+b") as f:
        f.seek(at)
        chunk = f.read(count)
        f.seek(at)
        f.write(bytes(b ^ 0xFF for b in chunk))


def damage_pack(path, start, end, how):
    """Damages bytes [start, end) of a pack: what the victim's new revision appended."""
    if how == "trailer":  # the end of the pack: the last record's authentication tag
        flip(path, end - 16, 16)
    elif how == "flip":
        with open(path, "r+b") as f:
            for k in range(1, 8):  # several places, so that more than one chunk of the victim is hit
                at = start + (end - start) * k // 8
                f.seek(at)
                chunk = f.read(16)
                f.seek(at)
                f.write(bytes(b ^ 0xFF for b in chunk))
    else:
        os.truncate(path, start + (end - start) // 2)


@pytest.mark.log_errors()  # the damage is expected to be logged; crashes still fail the test
@pytest.mark.parametrize("how", ["flip", "trailer", "truncate"])
def test_damaged_pack_gives_eio(node, how):
    keep = random_bytes(300_000)
    write_file(node.p("keep.bin"), keep)
    os.mkdir(node.p("dir"))
    write_file(node.p("dir", "other.txt"), b"other file\n")
    victim = node.p("victim.bin")
    write_file(victim, b"small first version")
    node.stop()
    before = pack_sizes(node.home)

    # The victim's new content is everything appended to the packs in this session: the directory does
    # not change (same name, same document), so only the victim's chunks land there.
    node.start()
    data = random_bytes(VICTIM_SIZE)
    write_file(victim, data)
    node.stop()
    after = pack_sizes(node.home)
    growth = [(p, before.get(p, 0), size) for p, size in after.items() if size > before.get(p, 0)]
    assert growth, "writing 1 MiB added nothing to HOME/store/packs"
    pack, start, end = max(growth, key=lambda g: g[2] - g[1])
    assert end - start >= VICTIM_SIZE // 2, f"only {end - start} bytes appended for a 1 MiB random file"
    damage_pack(pack, start, end, how)

    log_offset = len(node.log_text())
    node.start()
    assert read_file(node.p("keep.bin")) == keep, "an undamaged file no longer reads back"
    assert read_file(node.p("dir", "other.txt")) == b"other file\n"
    assert {"dir", "keep.bin", "victim.bin"} <= set(os.listdir(node.p()))

    # Read piece by piece: whatever is returned before the error must be the right bytes. Failing
    # already at open is fine too.
    error = None
    try:
        fd = os.open(victim, os.O_RDONLY)
    except OSError as e:
        error = e
    else:
        try:
            offset = 0
            while offset < VICTIM_SIZE:
                try:
                    piece = os.pread(fd, 65536, offset)
                except OSError as e:
                    error = e
                    break
                assert piece, f"early end of file at {offset} of {VICTIM_SIZE}"
                assert piece == data[offset:offset + len(piece)], f"wrong bytes at offset {offset}"
                offset += len(piece)
        finally:
            os.close(fd)
    assert error is not None, f"damaged ({how}) file read back without an error"
    assert error.errno == errno.EIO, f"expected EIO, got {errno.errorcode.get(error.errno)}"
    assert node.pid is not None and os.path.exists(f"/proc/{node.pid}"), "daemon died reading damaged data"

    shown = node.cli("cat", victim, check=False, text=False)
    assert shown.returncode != 0 or shown.stdout == data, "`hypernet cat` printed wrong bytes"

    new_log = node.log_text()[log_offset:]
    assert any(NAMES_OBJECT.search(line) for line in new_log.splitlines()), \
        f"no log line names the damaged object:\n{new_log[-3000:]}"

    check_fsck_names(node, "/victim.bin", healthy=("/keep.bin", "/dir/other.txt"))
    # Reporting never deletes: the healthy file is still there after fsck.
    assert read_file(node.p("keep.bin")) == keep


def check_fsck_names(node, damaged, healthy):
    """`hypernet fsck` fails and names the damaged file by its path, and no healthy one."""
    fsck = node.cli("fsck", check=False, timeout=300)
    report = fsck.stdout + fsck.stderr
    assert fsck.returncode != 0, f"fsck exited 0 on a damaged pack:\n{fsck.stdout}"
    assert damaged + ")" in report, f"fsck does not name {damaged}:\n{report[-3000:]}"
    for path in healthy:
        assert path + ")" not in report, f"fsck names the healthy {path}:\n{report[-3000:]}"


def read_gives_eio(path):
    with pytest.raises(OSError) as failure:
        read_file(path)
    assert failure.value.errno == errno.EIO, f"{path}: expected EIO, got {errno.errorcode.get(failure.value.errno)}"


# The damaged header is logged when the store opens, and at each read of a chunk in that pack.
@pytest.mark.log_errors()
def test_damaged_pack_header_affects_only_that_pack(node):
    """One flipped byte in a pack's header (issue 14, item 8): the node still mounts, new chunks go to the next
    pack, the files whose chunks are in the damaged one read EIO and fsck names them; the rest reads."""
    victim = random_bytes(VICTIM_SIZE)
    write_file(node.p("victim.bin"), victim)
    node.stop()
    packs = sorted((node.home / "store" / "packs").glob("*.pack"))
    assert len(packs) == 1, f"expected one pack, found {packs}"
    flip(packs[0], 3, 1)

    node.start()  # failed before the fix: "bad header", the whole store offline
    keep = random_bytes(300_000)
    write_file(node.p("keep.bin"), keep)
    os.mkdir(node.p("dir"))
    write_file(node.p("dir", "other.txt"), b"other file\n")
    assert read_file(node.p("keep.bin")) == keep
    read_gives_eio(node.p("victim.bin"))
    assert len(list((node.home / "store" / "packs").glob("*.pack"))) == 2, "new chunks did not go to a new pack"

    # Once the damaged pack is no longer the last one, it is still only its own chunks that fail.
    node.restart()
    assert {"dir", "keep.bin", "victim.bin"} <= set(os.listdir(node.p()))
    assert read_file(node.p("keep.bin")) == keep
    assert read_file(node.p("dir", "other.txt")) == b"other file\n"
    read_gives_eio(node.p("victim.bin"))
    check_fsck_names(node, "/victim.bin", healthy=("/keep.bin", "/dir/other.txt"))
    node.stop()
    check_fsck_names(node, "/victim.bin", healthy=("/keep.bin", "/dir/other.txt"))  # without a daemon
