import CFuse3
import Glibc
import HypernetVFS

/// The op table handed to `fuse_session_new`. Ops left NULL are answered by libfuse itself:
/// ioctl, poll, bmap, fallocate, copy_file_range with ENOSYS; access is never sent because
/// the mount uses `default_permissions`; without getlk/setlk/flock the kernel keeps POSIX and BSD
/// locks locally (one node, as the contract says).
func operations() -> fuse_lowlevel_ops {
    var ops = fuse_lowlevel_ops()
    ops.`init` = opInit
    ops.destroy = opDestroy
    ops.lookup = opLookup
    ops.forget = opForget
    ops.forget_multi = opForgetMulti
    ops.getattr = opGetattr
    ops.setattr = opSetattr
    ops.readlink = opReadlink
    ops.mknod = opMknod
    ops.mkdir = opMkdir
    ops.unlink = opUnlink
    ops.rmdir = opRmdir
    ops.symlink = opSymlink
    ops.rename = opRename
    ops.link = opLink
    ops.open = opOpen
    ops.create = opCreate
    ops.read = opRead
    ops.write = opWrite
    ops.flush = opFlush
    ops.release = opRelease
    ops.fsync = opFsync
    ops.lseek = opLseek
    ops.opendir = opOpendir
    ops.readdir = opReaddir
    ops.readdirplus = opReaddirplus
    ops.releasedir = opReleasedir
    ops.fsyncdir = opFsyncdir
    ops.statfs = opStatfs
    ops.setxattr = opSetxattr
    ops.getxattr = opGetxattr
    ops.listxattr = opListxattr
    ops.removexattr = opRemovexattr
    return ops
}

/// Largest write and readahead asked for. libfuse derives `max_pages` from `max_write` when the kernel
/// offers FUSE_MAX_PAGES, and its buffers hold exactly 1 MiB; the kernel caps readahead at its own offer.
private let maxTransfer: UInt32 = 1 << 20

private func opInit(_ userdata: UnsafeMutableRawPointer?, _ conn: UnsafeMutablePointer<fuse_conn_info>?) {
    let adapter = Unmanaged<Adapter>.fromOpaque(userdata!).takeUnretainedValue()
    let conn = conn!
    let wanted = UInt32(FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_ASYNC_READ)
    // Asking for what the kernel lacks makes libfuse abort the session.
    conn.pointee.want |= wanted & conn.pointee.capable
    // EXPORT_SUPPORT: no NFS export (handles are not persistent). WRITEBACK_CACHE: every write reaches the
    // VFS, so a revision holds every write made before close/fsync. POSIX/FLOCK locks: the kernel locks
    // locally. HANDLE_KILLPRIV: the VFS's write does not clear set-uid/set-gid, so the kernel does it with a
    // setattr of the mode on write, truncate and chown.
    let refused =
        FUSE_CAP_EXPORT_SUPPORT | FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS
        | FUSE_CAP_HANDLE_KILLPRIV
    conn.pointee.want &= ~UInt32(refused)
    conn.pointee.max_write = maxTransfer
    conn.pointee.max_readahead = maxTransfer
    adapter.logger.info(
        "kernel connection ready",
        metadata: [
            "protocol": "\(conn.pointee.proto_major).\(conn.pointee.proto_minor)",
            "capable": "0x\(String(conn.pointee.capable, radix: 16))",
            "want": "0x\(String(conn.pointee.want, radix: 16))",
        ])
}

private func opDestroy(_ userdata: UnsafeMutableRawPointer?) {
    let adapter = Unmanaged<Adapter>.fromOpaque(userdata!).takeUnretainedValue()
    adapter.logger.info("kernel connection closed")
}
