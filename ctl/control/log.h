// The daemon's log: one line per event on stderr, with a level filter.  Never
// pass key material here (SaSpec has no printer for its keys on purpose).
#pragma once

#include <string>
#include <string_view>

#include "config/daemon_config.h"  // LogLevel: one definition, shared with the config file

namespace ov2 {

// Parses "error", "warn"/"warning", "info", "debug"; throws ov2::Error(InvalidArgument).
LogLevel parse_log_level(std::string_view s);
void set_log_level(LogLevel level);
bool log_enabled(LogLevel level);
// Writes "ipsecov2d[LEVEL]: message" to stderr if the level is enabled.
void log(LogLevel level, const std::string& message);

}  // namespace ov2
