// The message of the ov2::Error that `f` throws ("" if it throws none), for
// tests of error messages; `code`, if given, receives the error's code.
#pragma once

#include <functional>
#include <string>

#include "common/error.h"

namespace ov2::test {

inline std::string error_of(const std::function<void()>& f, ErrorCode* code = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (code) *code = e.code();
    return e.what();
  }
  return "";
}

}  // namespace ov2::test
