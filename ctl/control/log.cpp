#include "control/log.h"

#include <atomic>
#include <cstdio>

#include "common/error.h"

namespace ov2 {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::Info)};

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::Error:
      return "error";
    case LogLevel::Warn:
      return "warning";
    case LogLevel::Info:
      return "info";
    case LogLevel::Debug:
      return "debug";
  }
  return "info";
}
}  // namespace

LogLevel parse_log_level(std::string_view s) {
  if (s == "error") return LogLevel::Error;
  if (s == "warning" || s == "warn") return LogLevel::Warn;
  if (s == "info") return LogLevel::Info;
  if (s == "debug") return LogLevel::Debug;
  fail(ErrorCode::InvalidArgument, "log level must be error, warning, info or debug, not '" + std::string(s) + "'");
}

void set_log_level(LogLevel level) { g_level.store(static_cast<int>(level)); }

bool log_enabled(LogLevel level) { return static_cast<int>(level) <= g_level.load(); }

void log(LogLevel level, const std::string& message) {
  if (!log_enabled(level)) return;
  // One fprintf per line so concurrent writers do not interleave within a line.
  std::fprintf(stderr, "ipsecov2d[%s]: %s\n", level_name(level), message.c_str());
}

}  // namespace ov2
