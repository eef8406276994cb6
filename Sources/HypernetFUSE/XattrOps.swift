import CFuse3
import Glibc
import HypernetVFS

// Extended attributes. Size-0 requests are probes that get the length; a buffer too small gets ERANGE.

func opSetxattr(
    _ req: fuse_req_t?, _ inode: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ value: UnsafePointer<CChar>?,
    _ size: Int, _ flags: Int32
) {
    let request = Request(req, "setxattr")
    guard let name = request.string(name) else { return }
    let bytes = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
    do {
        try request.fileSystem.setxattr(
            inode: inode, name: name, value: bytes, flags: XattrFlags(rawValue: flags), caller: request.caller())
        request.replyOK()
    } catch {
        request.reply(error: error)
    }
}

func opGetxattr(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ size: Int) {
    let request = Request(req, "getxattr")
    guard let name = request.string(name) else { return }
    do {
        request.reply(xattr: try request.fileSystem.getxattr(inode: inode, name: name), size: size)
    } catch {
        request.reply(error: error)
    }
}

/// Names are packed as the kernel expects them: each one followed by a NUL.
func opListxattr(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ size: Int) {
    let request = Request(req, "listxattr")
    do {
        let names = try request.fileSystem.listxattr(inode: inode)
        let packed = names.flatMap { name -> [UInt8] in Array(name.utf8) + [0] }
        request.reply(xattr: packed, size: size)
    } catch {
        request.reply(error: error)
    }
}

func opRemovexattr(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
    let request = Request(req, "removexattr")
    guard let name = request.string(name) else { return }
    do {
        try request.fileSystem.removexattr(inode: inode, name: name)
        request.replyOK()
    } catch {
        request.reply(error: error)
    }
}
