#pragma once
// The 8-bit library only: subjects are bytes (no UTF mode), so invalid UTF-8 in a line is just bytes.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
