import CFuse3
import Glibc
import HypernetVFS

// Open files: open/create, read/write, lseek (SEEK_DATA/SEEK_HOLE), flush (close of one descriptor), release, fsync.
// `fi->fh` carries the VFS handle from open/create to every later op on the same open file.

func opOpen(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let request = Request(req, "open")
    let info = fi!
    do {
        let caller = request.caller(withGroups: request.fileSystem.dependsOnCaller(inode: inode))
        let handle = try request.fileSystem.open(inode: inode, flags: info.pointee.flags, caller: caller)
        info.pointee.fh = handle
        // Other nodes change content behind the kernel: never keep the page cache across opens.
        info.pointee.keep_cache = 0
        // `/.hypernet/status` and `events` have no size in advance: every read must reach the VFS.
        if request.fileSystem.needsDirectIO(inode: inode) {
            info.pointee.direct_io = 1
            info.pointee.nonseekable = 1
        }
        // The kernel never sends release for an open whose reply it did not receive.
        if fuse_reply_open(request.raw, info) != 0 { request.fileSystem.release(handle: handle) }
    } catch {
        request.reply(error: error)
    }
}

func opCreate(
    _ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ mode: mode_t,
    _ fi: UnsafeMutablePointer<fuse_file_info>?
) {
    let request = Request(req, "create")
    guard let name = request.name(name) else { return }
    let info = fi!
    do {
        // "/", which no create carries, is the name of an O_TMPFILE (CFuse3/shim.h): a file without a name.
        let (attributes, handle) = try request.fileSystem.create(
            parent: parent, name: name == "/" ? nil : name, mode: mode, flags: info.pointee.flags,
            caller: request.caller())
        info.pointee.fh = handle
        info.pointee.keep_cache = 0
        var entry = fuse_entry_param(attributes)
        if fuse_reply_create(request.raw, &entry, info) != 0 {
            request.fileSystem.release(handle: handle)
            request.fileSystem.forget(inode: attributes.inode, count: 1)
        }
    } catch {
        request.reply(error: error)
    }
}

func opRead(
    _ req: fuse_req_t?, _ inode: fuse_ino_t, _ size: Int, _ offset: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>?
) {
    let request = Request(req, "read")
    if let reader = request.fileSystem.eventReader(handle: fi!.pointee.fh) {
        readEvents(reader, request: request, size: size)
        return
    }
    do {
        request.reply(bytes: try request.fileSystem.read(handle: fi!.pointee.fh, offset: UInt64(offset), size: size))
    } catch {
        request.reply(error: error)
    }
}

/// The kernel's buffer is handed to the VFS as is; it stays valid until this callback returns.
func opWrite(
    _ req: fuse_req_t?, _ inode: fuse_ino_t, _ buffer: UnsafePointer<CChar>?, _ size: Int, _ offset: off_t,
    _ fi: UnsafeMutablePointer<fuse_file_info>?
) {
    let request = Request(req, "write")
    do {
        let written = try request.fileSystem.write(
            handle: fi!.pointee.fh, offset: UInt64(offset), data: UnsafeRawBufferPointer(start: buffer, count: size))
        fuse_reply_write(request.raw, written)
    } catch {
        request.reply(error: error)
    }
}

func opFlush(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let request = Request(req, "flush")
    do {
        try request.fileSystem.flush(handle: fi!.pointee.fh)
        request.replyOK()
    } catch {
        request.reply(error: error)
    }
}

func opRelease(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let request = Request(req, "release")
    request.fileSystem.release(handle: fi!.pointee.fh)
    request.replyOK()
}

func opFsync(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ datasync: Int32, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let request = Request(req, "fsync")
    do {
        let handle = fi!.pointee.fh
        try request.interruptible { interruption in
            try request.fileSystem.fsync(handle: handle, dataOnly: datasync != 0, interruption: interruption)
        }
        request.replyOK()
    } catch {
        request.reply(error: error)
    }
}

/// `SEEK_DATA` and `SEEK_HOLE` (Linux's values): unistd.h defines them only under _GNU_SOURCE, which the
/// Glibc module does not set.
private let seekData: Int32 = 3
private let seekHole: Int32 = 4

/// The kernel answers SEEK_SET/CUR/END itself and sends SEEK_DATA and SEEK_HOLE here.
func opLseek(
    _ req: fuse_req_t?, _ inode: fuse_ino_t, _ offset: off_t, _ whence: Int32,
    _ fi: UnsafeMutablePointer<fuse_file_info>?
) {
    let request = Request(req, "lseek")
    guard whence == seekData || whence == seekHole, offset >= 0 else { return request.reply(errno: EINVAL) }
    do {
        let found = try request.fileSystem.seek(
            inode: inode, handle: fi!.pointee.fh, offset: UInt64(offset), data: whence == seekData)
        fuse_reply_lseek(request.raw, off_t(found))
    } catch {
        request.reply(error: error)
    }
}
