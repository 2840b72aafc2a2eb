#include "control/event_bus.h"

#include <ctime>

#include "model/sa_json.h"

namespace ov2 {

using nlohmann::json;

std::string utc_timestamp_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void EventBus::emit(json event) {
  event["time"] = utc_timestamp_now();
  ++emitted_;
  if (sink_) sink_(event);
}

void EventBus::on_change(const ChangeEvent& change) {
  json e = {{"event", change_kind_name(change.kind)}, {"reason", change_cause_name(change.cause)}};
  switch (change.kind) {
    case ChangeKind::SaAdded:
    case ChangeKind::SaUpdated:
    case ChangeKind::SaDeleted:
      e["handle"] = handle_to_string(change.sa_handle);
      e["dir"] = to_string(change.sa_dir);
      e["spi"] = handle_to_string(change.sa_spi);
      e["mode"] = to_string(change.sa_mode);
      break;
    case ChangeKind::PolicyAdded:
    case ChangeKind::PolicyDeleted:
    case ChangeKind::PolicyUpdated:
      e["id"] = change.policy_id;
      break;
  }
  emit(std::move(e));
}

std::string event_human_line(const json& event) {
  std::string line = event.value("time", std::string("-")) + " " + event.value("event", std::string("?"));
  if (auto h = event.find("handle"); h != event.end() && h->is_string()) line += " " + h->get<std::string>();
  for (const auto& [key, value] : event.items()) {
    if (key == "time" || key == "event" || key == "handle") continue;
    line += " " + key + "=" + (value.is_string() ? value.get<std::string>() : value.dump());
  }
  return line;
}

}  // namespace ov2
