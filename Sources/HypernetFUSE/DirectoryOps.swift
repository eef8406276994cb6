import CFuse3
import Glibc
import HypernetVFS

// Directories: opendir/readdir/readdirplus/releasedir/fsyncdir, and statfs.

func opOpendir(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let request = Request(req, "opendir")
    let info = fi!
    do {
        let fileSystem = request.fileSystem
        let handle = try fileSystem.opendir(
            inode: inode, caller: request.caller(withGroups: fileSystem.dependsOnCaller(inode: inode)))
        info.pointee.fh = handle
        if fuse_reply_open(request.raw, info) != 0 { request.fileSystem.releasedir(handle: handle) }
    } catch {
        request.reply(error: error)
    }
}

func opReaddir(
    _ req: fuse_req_t?, _ inode: fuse_ino_t, _ size: Int, _ offset: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>?
) {
    replyDirectory(Request(req, "readdir"), handle: fi!.pointee.fh, size: size, offset: offset, plus: false)
}

func opReaddirplus(
    _ req: fuse_req_t?, _ inode: fuse_ino_t, _ size: Int, _ offset: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>?
) {
    replyDirectory(Request(req, "readdirplus"), handle: fi!.pointee.fh, size: size, offset: offset, plus: true)
}

/// Packs entries after `offset` into a buffer of at most `size` bytes, stopping at the first entry
/// that does not fit (the kernel asks again from its offset). With `plus`, every packed entry except
/// `.` and `..` is a kernel reference, like a lookup: retained here, given back if the reply is lost.
private func replyDirectory(_ request: Request, handle: UInt64, size: Int, offset: off_t, plus: Bool) {
    let entries: [DirectoryEntry]
    do {
        // No more than fit: an entry takes at least 32 bytes (`fuse_dirent` with a name of up to 8), 160 with
        // attributes (`fuse_direntplus`).
        let fitting = size / (plus ? 160 : 32) + 1
        entries = try request.fileSystem.readdir(handle: handle, offset: UInt64(offset), limit: fitting)
    } catch {
        return request.reply(error: error)
    }
    let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
    defer { buffer.deallocate() }
    var used = 0
    var retained: [UInt64] = []
    for entry in entries {
        let next = off_t(entry.nextOffset)
        let needed = (FileName.encode(entry.name) + [0]).withUnsafeBufferPointer { bytes in
            let name = UnsafeRawPointer(bytes.baseAddress!).assumingMemoryBound(to: CChar.self)
            if plus {
                var param = fuse_entry_param(entry.attributes)
                return fuse_add_direntry_plus(request.raw, buffer + used, size - used, name, &param, next)
            }
            var st = stat(entry.attributes)
            return fuse_add_direntry(request.raw, buffer + used, size - used, name, &st, next)
        }
        if needed > size - used { break }
        used += needed
        if plus && entry.name != "." && entry.name != ".." {
            request.fileSystem.retain(inode: entry.attributes.inode)
            retained.append(entry.attributes.inode)
        }
    }
    if fuse_reply_buf(request.raw, buffer, used) != 0 {
        for inode in retained { request.fileSystem.forget(inode: inode, count: 1) }
    }
}

func opReleasedir(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let request = Request(req, "releasedir")
    request.fileSystem.releasedir(handle: fi!.pointee.fh)
    request.replyOK()
}

func opFsyncdir(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ datasync: Int32, _ fi: UnsafeMutablePointer<fuse_file_info>?)
{
    let request = Request(req, "fsyncdir")
    do {
        try request.fileSystem.fsyncdir(handle: fi!.pointee.fh)
        request.replyOK()
    } catch {
        request.reply(error: error)
    }
}

func opStatfs(_ req: fuse_req_t?, _ inode: fuse_ino_t) {
    let request = Request(req, "statfs")
    do {
        let statistics = try request.fileSystem.statfs()
        var st = statvfs()
        st.f_bsize = UInt(statistics.blockSize)
        st.f_frsize = UInt(statistics.blockSize)
        st.f_blocks = fsblkcnt_t(statistics.blocks)
        st.f_bfree = fsblkcnt_t(statistics.blocksFree)
        st.f_bavail = fsblkcnt_t(statistics.blocksAvailable)
        st.f_files = fsfilcnt_t(statistics.files)
        st.f_ffree = fsfilcnt_t(statistics.filesFree)
        st.f_favail = fsfilcnt_t(statistics.filesFree)
        st.f_namemax = UInt(statistics.nameMax)
        fuse_reply_statfs(request.raw, &st)
    } catch {
        request.reply(error: error)
    }
}
