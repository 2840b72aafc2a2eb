#include "common/error.h"

namespace ov2 {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidArgument: return "invalid-argument";
    case ErrorCode::NotFound: return "not-found";
    case ErrorCode::Exists: return "exists";
    case ErrorCode::Unsupported: return "unsupported";
    case ErrorCode::ResourceExhausted: return "resource-exhausted";
    case ErrorCode::Kernel: return "kernel";
    case ErrorCode::Internal: return "internal";
  }
  return "internal";
}

}  // namespace ov2
