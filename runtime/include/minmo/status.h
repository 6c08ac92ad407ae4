// Errors of the minmo runtime. Every failure that a caller can act on is thrown as
// minmo::Error carrying an ErrorCode; the Python binding maps each code to an exception class
// (MinmoError and its subclasses). Messages name the object at fault (file, tensor, argument).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace minmo {

enum class ErrorCode {
  InvalidArgument,     // bad input from the caller (shape, dtype, value, state)
  BundleError,         // the bundle on disk is malformed, incomplete, modified or unsafe
  UnsupportedVersion,  // the bundle's format major version is not understood by this runtime
  CacheFull,           // a KV / state cache cannot hold the requested positions
  Closed,              // the object was closed
  NotFound,            // a named item (module, weight, file) does not exist
  DeviceError,         // the requested device is missing, out of memory, or reported a failure
  Internal,            // a broken invariant inside the runtime (a bug)
};

// Stable name of a code ("InvalidArgument", ...).
inline const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidArgument: return "InvalidArgument";
    case ErrorCode::BundleError: return "BundleError";
    case ErrorCode::UnsupportedVersion: return "UnsupportedVersion";
    case ErrorCode::CacheFull: return "CacheFull";
    case ErrorCode::Closed: return "Closed";
    case ErrorCode::NotFound: return "NotFound";
    case ErrorCode::DeviceError: return "DeviceError";
    case ErrorCode::Internal: return "Internal";
  }
  return "Unknown";
}

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace minmo

// MINMO_THROW(code, a << b << c): throws minmo::Error(code, message built with operator<<).
#define MINMO_THROW(code, msg)                            \
  do {                                                    \
    std::ostringstream minmo_err_os_;                     \
    minmo_err_os_ << msg;                                 \
    throw ::minmo::Error((code), minmo_err_os_.str());    \
  } while (0)

// MINMO_CHECK(cond, code, a << b): throws minmo::Error(code, message) when cond is false.
#define MINMO_CHECK(cond, code, msg)   \
  do {                                 \
    if (!(cond)) MINMO_THROW(code, msg); \
  } while (0)
