// Turns one request line of the control protocol (protocol.h) into one answer
// line, by calling the ControlPlane.  No I/O: the socket server feeds it, and
// tests call it directly.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "control/control_plane.h"

namespace ov2 {

class RequestHandler {
 public:
  // `plane` must outlive the handler.
  explicit RequestHandler(ControlPlane& plane) : plane_(plane) {}

  // Parses, dispatches and answers one request line (without the newline).
  // Never throws: every failure becomes an {"ok":false,...} answer line.
  std::string handle_line(std::string_view line);

  // Dispatches a parsed request; throws ov2::Error on failure.  Returns the
  // answer object (with "ok":true).
  nlohmann::json handle(const nlohmann::json& request);

  // Where "stats" gets its answer (the daemon: Observability::stats()).
  // Without one, "stats" shows the SA table with zero counters and says the
  // data plane is not running.
  void set_stats_source(std::function<nlohmann::json()> source) { stats_source_ = std::move(source); }

 private:
  // sa.add with "sas": checks every entry, then installs them all or none;
  // returns the handles in order.
  nlohmann::json add_sa_batch(const nlohmann::json& list);

  ControlPlane& plane_;
  std::function<nlohmann::json()> stats_source_;
};

// The capabilities as the "caps" answer shows them (NDIS field names).
nlohmann::json capabilities_json(const Capabilities& caps);

}  // namespace ov2
