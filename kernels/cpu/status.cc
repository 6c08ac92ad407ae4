#include "minmo_kernels.h"

extern "C" const char* minmo_kernel_status_string(int status) {
  switch (status) {
    case MINMO_KERNEL_OK: return "ok";
    case MINMO_KERNEL_INVALID_ARGUMENT: return "invalid argument";
    case MINMO_KERNEL_LAUNCH_FAILED: return "kernel launch failed";
    case MINMO_KERNEL_UNSUPPORTED: return "unsupported on this device";
    default: return "unknown kernel status";
  }
}
