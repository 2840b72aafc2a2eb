// Errors at the control-plane boundary.
//
// Style (one for the whole project): the control plane throws ov2::Error with a
// message a user can act on; the packet path never throws and returns status
// enums instead.
#pragma once

#include <stdexcept>
#include <string>

namespace ov2 {

enum class ErrorCode {
  InvalidArgument,  // bad request, config or CLI argument
  NotFound,         // unknown handle or policy id
  Exists,           // duplicate (SPI, dst, dir), duplicate policy
  Unsupported,      // refused algorithm, engine cannot do it
  ResourceExhausted,
  Kernel,           // a syscall or netlink request failed
  Internal,
};

const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

[[noreturn]] inline void fail(ErrorCode code, const std::string& message) { throw Error(code, message); }

}  // namespace ov2
