// Nothing to compile: the module only declares LLVMFuzzerRunDriver (linked from libFuzzer by -sanitize=fuzzer).
#include "CFuzzDriver.h"
