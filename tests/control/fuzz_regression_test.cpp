// Inputs the fuzzers found crashing, kept as regression tests
// (tests/fuzz/regressions/).  Each must now get an error answer.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "control/control_plane.h"
#include "control/request_handler.h"
#include "fake_engine.h"

namespace ov2 {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

TEST(FuzzRegression, JsonNumberOutOfRangeIsAnsweredNotThrown) {
  test::FakeEngine engine;
  ControlPlane plane(engine, 16);
  RequestHandler handler(plane);
  const std::string input = read_file(OV2_SOURCE_DIR "/tests/fuzz/regressions/control_request/number_out_of_range");
  ASSERT_FALSE(input.empty());
  const std::string answer = handler.handle_line(input);
  const auto j = nlohmann::json::parse(answer);
  EXPECT_EQ(j["ok"], false);
  EXPECT_EQ(j["error"]["code"], "invalid-argument");
  const auto inside = nlohmann::json::parse(handler.handle_line("{\"version\":1,\"op\":\"caps\",\"x\":5e5555}\n"));
  EXPECT_EQ(inside["ok"], false);
}

}  // namespace
}  // namespace ov2
