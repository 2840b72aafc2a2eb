// Fuzzes the daemon configuration parser: any input either parses into a
// configuration or throws ov2::Error; nothing else (no crash, no other
// exception, no sanitizer report).
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/error.h"
#include "config/daemon_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    (void)ov2::parse_config(text, "fuzz.conf");
  } catch (const ov2::Error&) {
  }
  return 0;
}
