// Daemon events for `ipsecov2ctl monitor`: one JSON object per event
// ({"time":"2026-11-25T16:40:01Z","event":"sa-deleted","handle":"0x2000001",
// "reason":"sa-delete-req",...}), handed to a sink (the control server's
// publish()).  Never carries keys: SAs are named by handle (and SPI/dir).
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "control/control_plane.h"

namespace ov2 {

class EventBus : public ControlPlane::Listener {
 public:
  using Sink = std::function<void(const nlohmann::json& event)>;

  // Where events go; an empty sink drops them.  Replaces the previous sink.
  void set_sink(Sink sink) { sink_ = std::move(sink); }

  // Stamps `event` with "time" (UTC, seconds) and hands it to the sink.
  void emit(nlohmann::json event);

  // ControlPlane::Listener: sa-added/updated/deleted, policy-added/deleted with "reason".
  void on_change(const ChangeEvent& change) override;

  uint64_t emitted() const { return emitted_; }

 private:
  Sink sink_;
  uint64_t emitted_ = 0;
};

// "2026-11-25T16:40:01Z" for now.
std::string utc_timestamp_now();

// One human line for an event object: "TIME EVENT [handle] key=value ...".
std::string event_human_line(const nlohmann::json& event);

}  // namespace ov2
