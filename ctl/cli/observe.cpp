#include "cli/observe.h"

#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <thread>

#include "cli/table.h"
#include "common/error.h"
#include "control/control_client.h"
#include "control/event_bus.h"
#include "control/stats_report.h"

namespace ov2 {

using nlohmann::json;

namespace {

json fetch_stats(const std::string& socket_path) {
  ControlClient client(socket_path);
  json answer = client.call({{"op", "stats"}});
  if (!answer.is_object() || !answer.contains("ok")) fail(ErrorCode::Internal, "ipsecov2d sent a malformed answer");
  if (!answer["ok"].get<bool>()) {
    const json& err = answer["error"];
    fail(ErrorCode::InvalidArgument, err.value("message", std::string("unknown error")));
  }
  return answer["stats"];
}

// "section.name" -> value for every plain counter (not the SA table).
std::map<std::string, uint64_t> flatten(const json& stats) {
  std::map<std::string, uint64_t> out;
  if (stats.contains("worker"))
    for (const auto& [k, v] : stats["worker"].items()) out["worker." + k] = v.get<uint64_t>();
  if (stats.contains("bpf"))
    for (const auto& [program, counters] : stats["bpf"].items())
      for (const auto& [k, v] : counters.items()) out["bpf." + program + "." + k] = v.get<uint64_t>();
  if (stats.contains("xsk"))
    for (const auto& [side, list] : stats["xsk"].items())
      for (size_t q = 0; q < list.size(); ++q)
        for (const auto& [k, v] : list[q].items())
          out["xsk." + side + "." + std::to_string(q) + "." + k] = v.get<uint64_t>();
  return out;
}

std::string rate_text(uint64_t now, uint64_t before, double seconds) {
  if (seconds <= 0 || now < before) return "";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f/s", static_cast<double>(now - before) / seconds);
  return buf;
}

void print_human(const json& stats, const json* previous, double seconds) {
  const json& dp = stats["dataplane"];
  if (dp.value("running", false))
    std::cout << "data plane: running, " << dp.value("queues", 0) << " queue(s), crypto "
              << dp.value("crypto", std::string("openssl")) << "\n";
  else
    std::cout << "data plane: " << dp.value("note", std::string("not running")) << "\n";
  const auto now = flatten(stats);
  const auto before = previous ? flatten(*previous) : std::map<std::string, uint64_t>{};
  if (!now.empty()) {
    TextTable t(previous ? std::vector<std::string>{"COUNTER", "VALUE", "RATE"}
                         : std::vector<std::string>{"COUNTER", "VALUE"});
    size_t zero = 0;
    for (const auto& [k, v] : now) {
      if (v == 0) {
        ++zero;
        continue;
      }
      if (previous) {
        auto it = before.find(k);
        t.add_row({k, std::to_string(v), rate_text(v, it == before.end() ? 0 : it->second, seconds)});
      } else {
        t.add_row({k, std::to_string(v)});
      }
    }
    t.print(std::cout);
    if (zero > 0) std::cout << "(" << zero << " counters at zero not shown; --json shows all)\n";
  }
  std::map<std::string, json> previous_sas;
  if (previous)
    for (const auto& sa : (*previous)["sas"]) previous_sas[sa["handle"].get<std::string>()] = sa;
  std::vector<std::string> header = {"HANDLE", "DIR",      "SPI",         "PACKETS",   "BYTES",
                                     "ERRORS", "NEXT-SEQ", "HIGHEST-SEQ", "COUNTED-BY"};
  if (previous) header.insert(header.begin() + 5, {"PKT/S", "BYTES/S"});
  TextTable sas(header);
  for (const auto& sa : stats["sas"]) {
    std::string errors;
    for (const auto& [reason, n] : sa["errors"].items())
      if (n.get<uint64_t>() > 0) errors += (errors.empty() ? "" : ",") + reason + "=" + n.dump();
    std::vector<std::string> row = {sa["handle"].get<std::string>(),
                                    sa["dir"].get<std::string>(),
                                    sa["spi"].get<std::string>(),
                                    sa["packets"].dump(),
                                    sa["bytes"].dump(),
                                    errors.empty() ? "-" : errors,
                                    sa["dir"] == "out" ? sa["next_seq"].dump() : "-",
                                    sa["dir"] == "in" ? sa["highest_seq"].dump() : "-",
                                    sa.value("counted_by", std::string("-"))};
    if (previous) {
      auto it = previous_sas.find(sa["handle"].get<std::string>());
      const uint64_t p0 = it == previous_sas.end() ? 0 : it->second["packets"].get<uint64_t>();
      const uint64_t b0 = it == previous_sas.end() ? 0 : it->second["bytes"].get<uint64_t>();
      row.insert(row.begin() + 5, {rate_text(sa["packets"].get<uint64_t>(), p0, seconds),
                                   rate_text(sa["bytes"].get<uint64_t>(), b0, seconds)});
    }
    sas.add_row(std::move(row));
  }
  if (stats["sas"].empty())
    std::cout << "no SAs\n";
  else
    sas.print(std::cout);
}

}  // namespace

int run_stats(const std::string& socket_path, const StatsArgs& args) {
  if (!args.watch_seconds) {
    const json stats = fetch_stats(socket_path);
    if (args.prometheus)
      std::cout << prometheus_text(stats);
    else if (args.json)
      std::cout << stats.dump() << '\n';
    else
      print_human(stats, nullptr, 0);
    return 0;
  }
  const double interval = *args.watch_seconds;
  if (!(interval >= 0.1 && interval <= 86400)) fail(ErrorCode::InvalidArgument, "--watch takes 0.1 to 86400 seconds");
  json previous;
  auto previous_time = std::chrono::steady_clock::now();
  for (bool first = true;; first = false) {
    const json stats = fetch_stats(socket_path);
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - previous_time).count();
    if (args.prometheus) {
      std::cout << prometheus_text(stats) << std::flush;
    } else if (args.json) {
      // One object per line: the counters and, after the first, the seconds they cover.
      json line = {{"time", utc_timestamp_now()}, {"stats", stats}};
      if (!first) line["interval_seconds"] = elapsed;
      std::cout << line.dump() << std::endl;
    } else {
      std::cout << "--- " << utc_timestamp_now() << " ---\n";
      print_human(stats, first ? nullptr : &previous, elapsed);
      std::cout << std::flush;
    }
    previous = stats;
    previous_time = now;
    std::this_thread::sleep_for(std::chrono::duration<double>(interval));
  }
}

int run_monitor(const std::string& socket_path, bool json_lines, uint64_t max_events) {
  ControlClient client(socket_path);
  json answer = client.call({{"op", "monitor"}});
  if (!answer.is_object() || !answer.value("ok", false)) {
    const std::string message =
        answer.contains("error") ? answer["error"].value("message", std::string("unknown error")) : "malformed answer";
    fail(ErrorCode::InvalidArgument, message);
  }
  uint64_t seen = 0;
  while (auto event = client.next_line(-1)) {
    if (json_lines)
      std::cout << event->dump() << std::endl;
    else
      std::cout << event_human_line(*event) << std::endl;
    if (max_events > 0 && ++seen >= max_events) break;
  }
  return 0;
}

}  // namespace ov2
