// Wrappers whose headers CLinux.h must not include (see there); the rest are static inline in CLinux.h.
#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include <sys/xattr.h>

long CLinux_getxattr(const char *path, const char *name, void *value, unsigned long size) {
    return getxattr(path, name, value, size);
}

int CLinux_setxattr(const char *path, const char *name, const void *value, unsigned long size) {
    return setxattr(path, name, value, size, 0);
}

int CLinux_punch_hole(int fd, long long offset, long long length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

int CLinux_malloc_trim(void) {
    return malloc_trim(0);
}

int CLinux_limit_malloc_arenas(int arenas) {
    return mallopt(M_ARENA_MAX, arenas);
}
