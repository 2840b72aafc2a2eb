// Fuzzes the control protocol: any line handed to the request handler must
// give exactly one answer line that is valid JSON with "ok", and never crash.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "../control/fake_engine.h"
#include "control/control_plane.h"
#include "control/request_handler.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ov2::test::FakeEngine* engine = new ov2::test::FakeEngine();
  static ov2::ControlPlane* plane = new ov2::ControlPlane(*engine, 1024);
  static ov2::RequestHandler* handler = new ov2::RequestHandler(*plane);
  const std::string line(reinterpret_cast<const char*>(data), size);
  const std::string answer = handler->handle_line(line);
  if (answer.empty() || answer.back() != '\n') __builtin_trap();
  const auto j = nlohmann::json::parse(answer, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.contains("ok")) __builtin_trap();
  return 0;
}
