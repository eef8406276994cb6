#pragma once
// 314: below 312 fuse_session_loop_mt is a macro Swift cannot import.
#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

// libfuse 3.14 (Debian 12) predates FUSE_TMPFILE (the `tmpfile` op came with 3.16) and answers it with ENOSYS,
// which the kernel turns into EOPNOTSUPP for every later open(O_TMPFILE). The kernel sends it the fuse_create_in of
// FUSE_CREATE and a name, and expects the reply of a create, so the session reads requests itself and passes it on
// as a create; the name of a tmpfile's dentry is "/", which no create carries, so the create handler tells them apart.
enum { hypernet_fuse_opcode_create = 35, hypernet_fuse_opcode_tmpfile = 51 };  // linux/fuse.h

/// libfuse's own read of one request, with FUSE_TMPFILE made FUSE_CREATE (the opcode is the second u32 of the
/// fuse_in_header). errno is left as read(2) set it: libfuse inspects it.
static inline ssize_t hypernet_fuse_read(int fd, void *buf, size_t len, void *userdata) {
    (void)userdata;
    ssize_t n = read(fd, buf, len);
    uint32_t opcode;
    if (n >= (ssize_t)(2 * sizeof(uint32_t))) {
        memcpy(&opcode, (char *)buf + sizeof(uint32_t), sizeof opcode);
        if (opcode == hypernet_fuse_opcode_tmpfile) {
            opcode = hypernet_fuse_opcode_create;
            memcpy((char *)buf + sizeof(uint32_t), &opcode, sizeof opcode);
        }
    }
    return n;
}

/// libfuse's own reply: a plain writev.
static inline ssize_t hypernet_fuse_writev(int fd, struct iovec *iov, int count, void *userdata) {
    (void)userdata;
    return writev(fd, iov, count);
}

/// Installs the reads above on a mounted session (libfuse copies `io`). Without splice functions libfuse offers
/// the kernel no splice, which it did not use anyway (it splices requests only for a `write_buf` op, and replies
/// only from file descriptors). Returns 0, or a negative errno.
static inline int hypernet_fuse_serve_tmpfile(struct fuse_session *se) {
    const struct fuse_custom_io io = {.writev = hypernet_fuse_writev, .read = hypernet_fuse_read};
    return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}
