// ipsecov2ctl stats and monitor: the observability commands.
#pragma once

#include <optional>
#include <string>

namespace ov2 {

struct StatsArgs {
  bool json = false;
  bool prometheus = false;
  std::optional<double> watch_seconds;  // repeat every N seconds, with rates
};

// Asks the daemon for its counters and prints them (table, JSON or
// Prometheus text).  Returns the exit code.  Throws ov2::Error.
int run_stats(const std::string& socket_path, const StatsArgs& args);

// Subscribes to the daemon's events and prints one line per event until the
// daemon closes the connection (exit 0) or the user interrupts.  `max_events`
// > 0 stops after that many events (for scripts).  Throws ov2::Error.
int run_monitor(const std::string& socket_path, bool json, uint64_t max_events);

}  // namespace ov2
