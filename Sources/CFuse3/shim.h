#pragma once
// 314: below 312 fuse_session_loop_mt is a macro Swift cannot import.
#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>
