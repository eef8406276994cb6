import CFuse3
import Glibc
import HypernetVFS

// Names, attributes and the namespace: lookup/forget, getattr/setattr, readlink, and the ops that
// create, remove or move a name.

func opLookup(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
    let request = Request(req, "lookup")
    guard let name = request.name(name) else { return }
    do {
        let fileSystem = request.fileSystem
        let caller = request.caller(withGroups: fileSystem.dependsOnCaller(inode: parent))
        request.reply(entry: try fileSystem.lookup(parent: parent, name: name, caller: caller))
    } catch {
        request.reply(error: error)
    }
}

func opForget(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ count: UInt64) {
    let request = Request(req, "forget")
    request.fileSystem.forget(inode: inode, count: count)
    request.replyNone()
}

func opForgetMulti(_ req: fuse_req_t?, _ count: Int, _ forgets: UnsafeMutablePointer<fuse_forget_data>?) {
    let request = Request(req, "forget_multi")
    if let forgets {
        for item in UnsafeBufferPointer(start: forgets, count: count) {
            request.fileSystem.forget(inode: item.ino, count: item.nlookup)
        }
    }
    request.replyNone()
}

func opGetattr(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let request = Request(req, "getattr")
    do {
        request.reply(attributes: try request.fileSystem.getattr(inode: inode))
    } catch {
        request.reply(error: error)
    }
}

func opSetattr(
    _ req: fuse_req_t?, _ inode: fuse_ino_t, _ attr: UnsafeMutablePointer<stat>?, _ toSet: Int32,
    _ fi: UnsafeMutablePointer<fuse_file_info>?
) {
    let request = Request(req, "setattr")
    let changes = attributeChanges(attr!.pointee, toSet: toSet)
    do {
        let attributes = try request.fileSystem.setattr(
            inode: inode, changes: changes, handle: fi?.pointee.fh, caller: request.caller(withGroups: true))
        request.reply(attributes: attributes)
    } catch {
        request.reply(error: error)
    }
}

/// Maps `FUSE_SET_ATTR_*` onto the fields the VFS changes. `*_NOW` wins over an explicit time (the
/// kernel sets both for `utimensat(UTIME_NOW)`); CTIME and the other bookkeeping bits are the VFS's to
/// compute. Only permission bits of the mode are passed: chmod never changes the file type.
func attributeChanges(_ attr: stat, toSet: Int32) -> AttributeChanges {
    func has(_ flag: Int32) -> Bool { toSet & flag != 0 }
    var changes = AttributeChanges()
    if has(FUSE_SET_ATTR_MODE) { changes.mode = attr.st_mode & 0o7777 }
    if has(FUSE_SET_ATTR_UID) { changes.uid = attr.st_uid }
    if has(FUSE_SET_ATTR_GID) { changes.gid = attr.st_gid }
    if has(FUSE_SET_ATTR_SIZE) { changes.size = UInt64(clamping: attr.st_size) }
    if has(FUSE_SET_ATTR_ATIME_NOW) {
        changes.atime = .now
    } else if has(FUSE_SET_ATTR_ATIME) {
        changes.atime = .set(Timestamp(attr.st_atim))
    }
    if has(FUSE_SET_ATTR_MTIME_NOW) {
        changes.mtime = .now
    } else if has(FUSE_SET_ATTR_MTIME) {
        changes.mtime = .set(Timestamp(attr.st_mtim))
    }
    changes.killSetID = has(FUSE_SET_ATTR_KILL_SUID) || has(FUSE_SET_ATTR_KILL_SGID)
    return changes
}

func opReadlink(_ req: fuse_req_t?, _ inode: fuse_ino_t) {
    let request = Request(req, "readlink")
    do {
        let target = try request.fileSystem.readlink(inode: inode)
        let bytes = FileName.encode(target) + [0]
        bytes.withUnsafeBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { _ = fuse_reply_readlink(request.raw, $0.baseAddress) }
        }
    } catch {
        request.reply(error: error)
    }
}

func opMknod(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ mode: mode_t, _ rdev: dev_t) {
    let request = Request(req, "mknod")
    guard let name = request.name(name) else { return }
    do {
        request.reply(
            entry: try request.fileSystem.mknod(
                parent: parent, name: name, mode: mode, rdev: UInt64(rdev), caller: request.caller()))
    } catch {
        request.reply(error: error)
    }
}

func opMkdir(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ mode: mode_t) {
    let request = Request(req, "mkdir")
    guard let name = request.name(name) else { return }
    do {
        request.reply(
            entry: try request.fileSystem.mkdir(parent: parent, name: name, mode: mode, caller: request.caller()))
    } catch {
        request.reply(error: error)
    }
}

func opSymlink(_ req: fuse_req_t?, _ target: UnsafePointer<CChar>?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?)
{
    let request = Request(req, "symlink")
    guard let target = request.name(target), let name = request.name(name) else { return }
    do {
        request.reply(
            entry: try request.fileSystem.symlink(
                parent: parent, name: name, target: target, caller: request.caller()))
    } catch {
        request.reply(error: error)
    }
}

func opUnlink(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
    let request = Request(req, "unlink")
    guard let name = request.name(name) else { return }
    do {
        try request.fileSystem.unlink(parent: parent, name: name)
        request.replyOK()
    } catch {
        request.reply(error: error)
    }
}

func opRmdir(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
    let request = Request(req, "rmdir")
    guard let name = request.name(name) else { return }
    do {
        try request.fileSystem.rmdir(parent: parent, name: name)
        request.replyOK()
    } catch {
        request.reply(error: error)
    }
}

func opRename(
    _ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ newParent: fuse_ino_t,
    _ newName: UnsafePointer<CChar>?, _ flags: UInt32
) {
    let request = Request(req, "rename")
    guard let name = request.name(name), let newName = request.name(newName) else { return }
    let renameFlags = RenameFlags(rawValue: flags)
    // RENAME_WHITEOUT (overlayfs) and any future flag: refused like a filesystem that lacks them.
    guard renameFlags.isSubset(of: [.noReplace, .exchange]) else { return request.reply(errno: EINVAL) }
    do {
        try request.fileSystem.rename(
            parent: parent, name: name, newParent: newParent, newName: newName, flags: renameFlags)
        request.replyOK()
    } catch {
        request.reply(error: error)
    }
}

func opLink(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ newParent: fuse_ino_t, _ newName: UnsafePointer<CChar>?) {
    let request = Request(req, "link")
    guard let newName = request.name(newName) else { return }
    do {
        request.reply(entry: try request.fileSystem.link(inode: inode, newParent: newParent, newName: newName))
    } catch {
        request.reply(error: error)
    }
}
