#pragma once
// Linux calls that Glibc's Swift module does not export (they need _GNU_SOURCE). Only what Swift
// cannot call: no logic.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sys/mman.h>

/// memfd_create(name, MFD_CLOEXEC): an anonymous memory file for write staging.
static inline int CLinux_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

/// getxattr(2). Declared without <sys/xattr.h>: with _GNU_SOURCE its includes clash with Glibc's module.
long CLinux_getxattr(const char *path, const char *name, void *value, unsigned long size);
/// setxattr(2) with no flags, declared likewise.
int CLinux_setxattr(const char *path, const char *name, const void *value, unsigned long size);

/// fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length): frees a staged range's memory.
int CLinux_punch_hole(int fd, long long offset, long long length);

/// malloc_trim(0): gives the heap's free memory back to the system. Declared here: <malloc.h> is not in Glibc's module.
int CLinux_malloc_trim(void);

/// mallopt(M_ARENA_MAX, arenas): at most `arenas` malloc arenas; nonzero on success. Declared here for <malloc.h>.
int CLinux_limit_malloc_arenas(int arenas);
