#include "control/observability.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>

#include "common/error.h"
#include "control/control_server.h"
#include "control/log.h"
#include "control/stats_report.h"
#include "dataplane/dataplane.h"
#include "dataplane/event_reader.h"
#include "esp/esp.h"
#include "model/sa_json.h"

namespace ov2 {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {
constexpr size_t kMaxHttpRequestBytes = 8192;
constexpr size_t kMaxHttpClients = 8;
constexpr auto kHttpIdle = std::chrono::seconds(5);
constexpr auto kFailureEventInterval = std::chrono::seconds(1);
// A tick finds each SA it reads by handle while those are fewer than
// 1/kWalkAllBelow of the SAs, else walks the database in step with them.
constexpr size_t kWalkAllBelow = 8;
// Per-SA failure counters reported as rate-limited monitor events (SaWatch::failures).
struct FailureKind {
  esp::Reason reason;
  const char* event;
};
constexpr FailureKind kFailureKinds[] = {{esp::Reason::Replayed, "replay-failures"},
                                         {esp::Reason::AuthFailed, "auth-failures"},
                                         {esp::Reason::PolicyMismatch, "policy-failures"}};

// An SA with a limit: its soft/hard events need a watch (and the seconds
// limit the time the SA was first seen).
bool has_lifetime(const SaSpec& s) {
  const LifetimeLimit none{};
  return s.life_packets != none || s.life_bytes != none || s.life_seconds != none;
}
// A limit only the counters tell: read at every tick.
bool has_count_limit(const SaSpec& s) {
  const LifetimeLimit none{};
  return s.life_packets != none || s.life_bytes != none;
}

// An SA whose counters hold a failure of a kind that is reported.
bool has_failures(const SaRuntimeCounters& c) {
  for (const FailureKind& k : kFailureKinds)
    if (c.by_reason[static_cast<size_t>(k.reason)] != 0) return true;
  return false;
}
// The daemon's source: the data plane itself.
class DataplaneSource final : public SaCounterSource {
 public:
  explicit DataplaneSource(Dataplane& d) : d_(d) {}
  bool running() const override { return d_.running(); }
  SaRuntimeCounters sa_counters(uint64_t handle) const override { return d_.sa_counters(handle); }
  uint64_t delete_requests_raised() const override { return d_.delete_requests_raised(); }
  std::vector<uint64_t> outbound_delete_requests() const override { return d_.outbound_delete_requests(); }
  bool take_failed_sas(std::vector<uint64_t>& out) override { return d_.take_failed_sas(out); }

 private:
  Dataplane& d_;
};
}  // namespace

Observability::Observability(ControlPlane& plane, Dataplane* dataplane, int events_fd, ObservabilityOptions options)
    : plane_(plane), dataplane_(dataplane), options_(std::move(options)) {
  if (events_fd >= 0)
    reader_ = std::make_unique<EventReader>(events_fd, [this](const ov2_event& e) { on_ring_event(e); });
  timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (timer_fd_ < 0) fail(ErrorCode::Kernel, std::string("timerfd_create: ") + std::strerror(errno));
  itimerspec spec{};
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(options_.tick).count();
  spec.it_interval.tv_sec = spec.it_value.tv_sec = ns / 1000000000;
  spec.it_interval.tv_nsec = spec.it_value.tv_nsec = ns % 1000000000;
  timerfd_settime(timer_fd_, 0, &spec, nullptr);
  try {
    if (!options_.prometheus_listen.empty()) open_http_listener();
  } catch (...) {
    close(timer_fd_);
    throw;
  }
  plane_.add_listener(&bus_);
  if (dataplane_ != nullptr) {
    dataplane_source_ = std::make_unique<DataplaneSource>(*dataplane_);
    source_ = dataplane_source_.get();
  }
  // The SAs there are already (restored) with a lifetime limit, then every change.
  for (const SaRecord* r : plane_.sas().list()) watch_added(*r);
  watch_index_.self = this;
  plane_.add_listener(&watch_index_);
}

Observability::~Observability() {
  detach();
  plane_.remove_listener(&watch_index_);
  plane_.remove_listener(&bus_);
  for (const auto& [fd, c] : http_clients_) close(fd);
  if (http_fd_ >= 0) close(http_fd_);
  if (timer_fd_ >= 0) close(timer_fd_);
}

void Observability::attach(ControlServer& server) {
  server_ = &server;
  bus_.set_sink([this](const json& event) {
    if (server_ != nullptr) server_->publish(event.dump());
  });
  server.set_stream_detector([](std::string_view answer) {
    // Only the monitor op's answer carries "stream":"monitor".
    return answer.find("\"stream\":\"monitor\"") != std::string_view::npos && answer.rfind("{\"ok\":true", 0) == 0;
  });
  // Observability must never take the daemon down: a failure here is logged and the loop goes on.
  auto guarded = [](const char* what, auto&& body) {
    try {
      body();
    } catch (const std::exception& e) {
      log(LogLevel::Warn, std::string(what) + ": " + e.what());
    }
  };
  if (reader_)
    server.watch(reader_->fd(), [this, guarded] { guarded("BPF event ring", [this] { reader_->poll(0); }); });
  server.watch(timer_fd_, [this, guarded] {
    uint64_t expirations = 0;
    if (read(timer_fd_, &expirations, sizeof expirations) == sizeof expirations)
      guarded("periodic SA check", [this] { on_tick(); });
  });
  if (http_fd_ >= 0) watch_http_listener();
  if (dataplane_ != nullptr && dataplane_->running()) {
    bus_.emit({{"event", "device-up"}, {"device", options_.offload_device}, {"wire", options_.wire}});
    const size_t queues = dataplane_->counters().per_worker.size();
    for (size_t q = 0; q < queues; ++q) bus_.emit({{"event", "worker-up"}, {"queue", q}});
  } else {
    bus_.emit({{"event", "device-down"}, {"note", "no data plane (ipsecov2d without --wire)"}});
  }
}

void Observability::detach() {
  if (server_ == nullptr) return;
  if (dataplane_ != nullptr && dataplane_->running()) {
    const size_t queues = dataplane_->counters().per_worker.size();
    for (size_t q = 0; q < queues; ++q) bus_.emit({{"event", "worker-down"}, {"queue", q}});
    bus_.emit({{"event", "device-down"}, {"device", options_.offload_device}, {"wire", options_.wire}});
  }
  server_->flush_streams();
  if (reader_) server_->unwatch(reader_->fd());
  server_->unwatch(timer_fd_);
  if (http_fd_ >= 0) server_->unwatch(http_fd_);
  for (const auto& [fd, c] : http_clients_) {
    server_->unwatch(fd);
    close(fd);
  }
  http_clients_.clear();
  bus_.set_sink(nullptr);
  server_ = nullptr;
}

json Observability::stats() const { return stats_json(plane_, dataplane_); }

void Observability::on_ring_event(const ov2_event& event) {
  if (event.type != OV2_EVENT_SA_DELETE_REQ) return;
  handle_delete_request(event.sa_handle, ChangeCause::SaDeleteReq, "verdict");
}

uint64_t Observability::matching_sa(const SaRecord& sa) const {
  const Direction other = sa.spec.dir == Direction::In ? Direction::Out : Direction::In;
  uint64_t best = 0;
  for (const SaRecord* r : plane_.sas().list()) {
    if (r->spec.dir != other || r->spec.mode != sa.spec.mode || r->bundled_in != 0) continue;
    if (r->spec.dst.family != sa.spec.dst.family) continue;
    // Endpoints swapped; an all-zero (any) inbound source matches any address.
    const SaSpec& in = sa.spec.dir == Direction::In ? sa.spec : r->spec;
    const SaSpec& out = sa.spec.dir == Direction::In ? r->spec : sa.spec;
    if (out.src != in.dst) continue;
    if (!in.src.is_any() && out.dst != in.src) continue;
    best = std::max(best, r->handle);  // handles grow with every add: the most recent
  }
  return best;
}

void Observability::handle_delete_request(uint64_t handle, ChangeCause cause, const char* source) {
  if (auto it = requested_.find(handle); it != requested_.end()) {
    ++it->second;  // coalesced: the same SA asked again before (or after) it went
    return;
  }
  const SaRecord* sa = plane_.sas().find(handle);
  requested_[handle] = 0;
  if (sa == nullptr) return;  // deleted meanwhile by the user
  const uint64_t match = matching_sa(*sa);
  const bool remove = options_.delete_on_request;
  json event = {{"event", "sa-delete-req"},
                {"handle", handle_to_string(handle)},
                {"dir", to_string(sa->spec.dir)},
                {"spi", handle_to_string(sa->spec.spi)},
                {"source", source},
                {"action", remove ? "delete" : "notify"}};
  if (match != 0) event["matching"] = handle_to_string(match);
  std::vector<uint64_t> handles = {handle};
  if (sa->bundled_in != 0) handles.push_back(sa->bundled_in);
  if (match != 0) handles.push_back(match);
  // Lifetime events the timer has not seen yet come before the request.
  if (source_ != nullptr && source_->running())
    for (uint64_t h : handles)
      if (const SaRecord* r = plane_.sas().find(h)) check_sa(*r, Clock::now());
  if (remove) {
    // Which policies go with the SAs (deleted like --force), told before the deletion events.
    std::set<uint32_t> policies;
    for (uint64_t h : handles)
      for (uint32_t id : plane_.spd().using_sa(h)) policies.insert(id);
    event["policies"] = policies;
  }
  bus_.emit(event);
  log(LogLevel::Info, std::string("SA delete request for ") + handle_to_string(handle) + " (" + source +
                          "): " + (remove ? "deleting" : "notify only"));
  if (!remove) return;
  try {
    const auto result = plane_.delete_sas(handles, true, cause);
    for (uint64_t h : result.deleted_sas) requested_.emplace(h, 0);  // the twin's own request is coalesced too
  } catch (const Error& e) {
    bus_.emit({{"event", "sa-delete-failed"}, {"handle", handle_to_string(handle)}, {"error", e.what()}});
    log(LogLevel::Warn, "cannot delete SA " + handle_to_string(handle) + " after its delete request: " + e.what());
  }
}

void Observability::on_kernel_sa_event(const KernelSaEvent& event) {
  const SaRecord* sa = plane_.sas().find(event.handle);
  if (sa == nullptr) return;  // gone already (the user deleted it meanwhile)
  if (event.kind != KernelSaEvent::Kind::Deleted) {
    const bool hard = event.kind == KernelSaEvent::Kind::HardExpire;
    bus_.emit({{"event", hard ? "hard-expired" : "soft-expired"},
               {"handle", handle_to_string(event.handle)},
               {"dir", to_string(sa->spec.dir)},
               {"spi", handle_to_string(sa->spec.spi)},
               {"packets", event.packets},
               {"bytes", event.bytes},
               {"limit", event.limit},
               {"source", "kernel"}});
    if (!hard) return;
  }
  log(LogLevel::Info, "the kernel " +
                          std::string(event.kind == KernelSaEvent::Kind::Deleted ? "no longer has"
                                                                                 : "hard-expired") +
                          " NIC-held SA " + handle_to_string(event.handle));
  handle_delete_request(event.handle, ChangeCause::Expired,
                        event.kind == KernelSaEvent::Kind::Deleted ? "kernel-deleted" : "kernel-expired");
}

void Observability::on_tick() {
  if (source_ != nullptr && source_->running()) {
    // Read before the walk: an SA that starts asking during it changes the number again.
    if (const uint64_t raised = source_->delete_requests_raised(); raised != delete_requests_seen_) {
      delete_requests_seen_ = raised;
      for (uint64_t h : source_->outbound_delete_requests())
        handle_delete_request(h, ChangeCause::Expired, "outbound-exhausted");
    }
    check_counters(Clock::now());
  }
  // Forget what no longer exists (handles are never reused); few entries.
  for (auto it = requested_.begin(); it != requested_.end();)
    it = plane_.sas().find(it->first) == nullptr ? requested_.erase(it) : std::next(it);
  const auto now = Clock::now();
  std::vector<int> idle;
  for (const auto& [fd, c] : http_clients_)
    if (now >= c.deadline) idle.push_back(fd);
  for (int fd : idle) close_http_client(fd);
}

void Observability::on_sa_change(const ChangeEvent& e) {
  if (e.kind == ChangeKind::SaDeleted) {
    // polled_, unstarted_ and deadlines_ skip it when it comes up.
    if (auto it = watches_.find(e.sa_handle); it != watches_.end()) drop_watch(it);
  } else if (e.kind == ChangeKind::SaAdded) {
    if (const SaRecord* r = plane_.sas().find(e.sa_handle)) watch_added(*r);
  }
}

void Observability::watch_added(const SaRecord& r) {
  if (!has_lifetime(r.spec)) return;
  SaWatch& w = watches_.try_emplace(r.handle).first->second;
  unstarted_.push_back(r.handle);  // its first tick starts its clock
  if (has_count_limit(r.spec)) poll(r.handle, w);
}

void Observability::poll(uint64_t handle, SaWatch& w) {
  if (w.polled) return;
  w.polled = true;
  ++polled_count_;
  polled_.push_back(handle);
}

std::map<uint64_t, Observability::SaWatch>::iterator Observability::drop_watch(
    std::map<uint64_t, SaWatch>::iterator it) {
  if (it->second.polled) --polled_count_;
  return watches_.erase(it);
}

void Observability::schedule(uint64_t handle, const SaSpec& s, const SaWatch& w) {
  auto next = Clock::time_point::max();
  if (!w.soft_reported && s.life_seconds.soft != 0)
    next = std::min(next, w.first_seen + std::chrono::seconds(s.life_seconds.soft));
  if (!w.hard_reported && s.life_seconds.hard != 0)
    next = std::min(next, w.first_seen + std::chrono::seconds(s.life_seconds.hard));
  if (next != Clock::time_point::max()) deadlines_.emplace(next, handle);
}

void Observability::check_counters(Clock::time_point now) {
  // SAs that counted a failure since the last tick get a watch and are read
  // at every tick from now on (the workers note them); when notes were
  // lost, every SA is looked at once.
  auto poll_for_failures = [&](uint64_t h) {
    auto w = watches_.find(h);
    if (w != watches_.end() && w->second.polled) return;  // read at every tick already
    try {
      if (!has_failures(source_->sa_counters(h))) return;
    } catch (...) {
      return;
    }
    if (w == watches_.end()) w = watches_.try_emplace(h).first;
    poll(h, w->second);
  };
  failed_.clear();
  if (source_->take_failed_sas(failed_)) {
    for (uint64_t h : failed_)
      if (plane_.sas().find(h) != nullptr) poll_for_failures(h);
  } else {
    for (const SaRecord* r : plane_.sas().list()) poll_for_failures(r->handle);
  }
  // Besides the polled SAs, this tick's: new watches and seconds limits due.
  due_.swap(unstarted_);
  unstarted_.clear();
  while (!deadlines_.empty() && deadlines_.top().first <= now) {
    due_.push_back(deadlines_.top().second);
    deadlines_.pop();
  }
  std::sort(due_.begin(), due_.end());
  due_.erase(std::unique(due_.begin(), due_.end()), due_.end());
  // Each in handle order (as when every SA was walked).  check_sa changes no
  // entry of watches_ (its events go to the bus only).
  auto check = [&](const SaRecord& r, SaWatch& w) {
    if (!check_sa(r, now, &w)) {
      unstarted_.push_back(r.handle);  // not readable yet: again at the next tick
      return;
    }
    // From here on: at every tick (a count limit, or failures to report
    // rate-limited), or at the next seconds limit.
    if (w.failures || has_count_limit(r.spec))
      poll(r.handle, w);
    else if (!w.polled)
      schedule(r.handle, r.spec, w);
  };
  if ((polled_count_ + due_.size()) * kWalkAllBelow < plane_.sas().size()) {
    // Few: each SA found by handle, O(D log N).
    // A handle is listed once (never reused); out of order when noted late.
    if (!std::is_sorted(polled_.begin(), polled_.end())) std::sort(polled_.begin(), polled_.end());
    merged_.clear();
    std::set_union(polled_.begin(), polled_.end(), due_.begin(), due_.end(), std::back_inserter(merged_));
    size_t stale = 0;
    for (uint64_t h : merged_) {
      auto w = watches_.find(h);
      if (w == watches_.end()) {  // deleted since it was listed
        ++stale;
        continue;
      }
      const SaRecord* r = plane_.sas().find(h);
      if (r == nullptr) {  // the listener drops it already; a safety net
        drop_watch(w);
        continue;
      }
      check(*r, w->second);
    }
    if (stale > polled_count_ + 64)  // deleted SAs' handles: rebuilt from the watches
      rebuild_polled();
    return;
  }
  // Many (every SA with a packets or bytes limit): one walk over the
  // database in step with the watches, O(N + W) without a search; the list of
  // polled handles is rebuilt on the way (sorted, without deleted SAs).
  polled_.clear();
  auto w = watches_.begin();
  auto extra = due_.begin();
  plane_.sas().for_each([&](const SaRecord& r) {
    while (w != watches_.end() && w->first < r.handle) w = drop_watch(w);  // its SA is gone
    while (extra != due_.end() && *extra < r.handle) ++extra;
    if (w == watches_.end() || w->first != r.handle) return;
    const bool listed = extra != due_.end() && *extra == r.handle;
    if (w->second.polled || listed) check(r, w->second);  // (poll() may list it now)
    if (w->second.polled && (polled_.empty() || polled_.back() != r.handle)) polled_.push_back(r.handle);
    ++w;
  });
  while (w != watches_.end()) w = drop_watch(w);
}

void Observability::rebuild_polled() {
  polled_.clear();
  for (const auto& [h, w] : watches_)
    if (w.polled) polled_.push_back(h);
}

bool Observability::check_sa(const SaRecord& r, Clock::time_point now, SaWatch* watch) {
  SaRuntimeCounters c{};
  try {
    c = source_->sa_counters(r.handle);
  } catch (...) {
    return false;
  }
  const SaSpec& s = r.spec;
  if (watch == nullptr) {
    auto found = watches_.find(r.handle);
    if (found == watches_.end()) {
      if (!has_lifetime(s) && !has_failures(c)) return true;  // nothing to report, nothing to remember
      found = watches_.try_emplace(r.handle).first;
      unstarted_.push_back(r.handle);  // the next tick polls or schedules it
    }
    watch = &found->second;
  }
  SaWatch& w = *watch;
  if (!w.started) {
    w.started = true;
    w.first_seen = now;
  }
  const auto age =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(now - w.first_seen).count());
  auto reached = [](uint64_t limit, uint64_t value) { return limit != 0 && value >= limit; };
  auto base = [&](const char* name) {
    return json{{"event", name},           {"handle", handle_to_string(r.handle)},
                {"dir", to_string(s.dir)}, {"spi", handle_to_string(s.spi)},
                {"packets", c.packets},    {"bytes", c.bytes}};
  };
  auto which = [&](bool soft) -> const char* {
    const auto& p = s.life_packets;
    const auto& b = s.life_bytes;
    const auto& t = s.life_seconds;
    if (reached(soft ? p.soft : p.hard, c.packets)) return "packets";
    if (reached(soft ? b.soft : b.hard, c.bytes)) return "bytes";
    if (reached(soft ? t.soft : t.hard, age)) return "seconds";
    return nullptr;
  };
  auto report = [&](bool soft, bool& reported) {  // once per SA and side
    if (reported) return;
    const char* limit = which(soft);
    if (limit == nullptr) return;
    reported = true;
    json e = base(soft ? "soft-expired" : "hard-expired");
    e["limit"] = limit;
    bus_.emit(std::move(e));
  };
  report(true, w.soft_reported);
  report(false, w.hard_reported);
  if (!w.failures && !has_failures(c)) return true;
  if (!w.failures) w.failures = std::make_unique<std::array<SaWatch::Failures, 3>>();
  for (size_t k = 0; k < std::size(kFailureKinds); ++k) {
    SaWatch::Failures& f = (*w.failures)[k];
    const uint64_t total = c.by_reason[static_cast<size_t>(kFailureKinds[k].reason)];
    f.pending += total - std::min(total, f.seen);
    f.seen = total;
    if (f.pending > 0 && now - f.last >= kFailureEventInterval) {
      json e = base(kFailureKinds[k].event);
      e["count"] = f.pending;
      e["total"] = total;
      bus_.emit(std::move(e));
      f.pending = 0;
      f.last = now;
    }
  }
  return true;
}

// ---- Prometheus listener ---------------------------------------------------

void Observability::open_http_listener() { http_fd_ = prometheus_listener(options_.prometheus_listen); }

int Observability::prometheus_listener(const std::string& spec, int* bind_error) {
  std::string host, port;
  if (!spec.empty() && spec.front() == '[') {
    const auto close_bracket = spec.find(']');
    if (close_bracket == std::string::npos || spec.size() < close_bracket + 2 || spec[close_bracket + 1] != ':')
      fail(ErrorCode::InvalidArgument, "stats.prometheus_listen '" + spec + "': write [IPv6]:PORT");
    host = spec.substr(1, close_bracket - 1);
    port = spec.substr(close_bracket + 2);
  } else {
    const auto colon = spec.rfind(':');
    if (colon == std::string::npos)
      fail(ErrorCode::InvalidArgument,
           "stats.prometheus_listen '" + spec + "': write ADDRESS:PORT, e.g. 127.0.0.1:9781");
    host = spec.substr(0, colon);
    port = spec.substr(colon + 1);
  }
  int port_number = 0;
  try {
    port_number = std::stoi(port);
  } catch (...) {
    port_number = -1;
  }
  if (port_number <= 0 || port_number > 65535)
    fail(ErrorCode::InvalidArgument, "stats.prometheus_listen '" + spec + "': the port must be 1..65535");
  sockaddr_storage addr{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port_number));
    len = sizeof *v4;
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port_number));
    len = sizeof *v6;
  } else {
    fail(ErrorCode::InvalidArgument,
         "stats.prometheus_listen '" + spec + "': '" + host + "' is not an IPv4 or IPv6 address");
  }
  const int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(ErrorCode::Kernel, std::string("socket: ") + std::strerror(errno));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (addr.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(fd, 16) != 0) {
    const int err = errno;
    close(fd);
    if (bind_error != nullptr) *bind_error = err;
    fail(ErrorCode::Kernel, "cannot listen on stats.prometheus_listen " + spec + ": " + std::strerror(err));
  }
  log(LogLevel::Info, "serving Prometheus metrics on http://" + spec + "/metrics");
  return fd;
}

void Observability::replace_prometheus_listener(int fd, const std::string& spec) {
  for (auto it = http_clients_.begin(); it != http_clients_.end();) {
    if (server_ != nullptr) server_->unwatch(it->first);
    close(it->first);
    it = http_clients_.erase(it);
  }
  if (http_fd_ >= 0) {
    if (server_ != nullptr) server_->unwatch(http_fd_);
    close(http_fd_);
    log(LogLevel::Info, "stopped serving Prometheus metrics on " +
                            (options_.prometheus_listen.empty() ? std::string("?") : options_.prometheus_listen));
  }
  http_fd_ = fd;
  options_.prometheus_listen = spec;
  if (http_fd_ >= 0 && server_ != nullptr) watch_http_listener();
}

namespace {
std::string port_of(const std::string& spec) { return spec.substr(spec.rfind(':') + 1); }
}  // namespace

int Observability::prepare_prometheus_listener(const std::string& spec) {
  int error = 0;
  try {
    return prometheus_listener(spec, &error);
  } catch (const Error&) {
    // The old listener holds the port (e.g. 127.0.0.1:9781 -> 0.0.0.0:9781): free it and try again.
    const std::string old = options_.prometheus_listen;
    if (error != EADDRINUSE || http_fd_ < 0 || port_of(old) != port_of(spec)) throw;
    replace_prometheus_listener(-1, "");
    try {
      return prometheus_listener(spec);
    } catch (const Error&) {
      try {
        replace_prometheus_listener(prometheus_listener(old), old);
      } catch (const Error& again) {
        log(LogLevel::Warn, std::string("cannot listen on the old Prometheus address again: ") + again.what());
      }
      throw;
    }
  }
}

void Observability::watch_http_listener() {
  server_->watch(http_fd_, [this] {
    try {
      on_http_accept();
    } catch (const std::exception& e) {  // observability never takes the daemon down
      log(LogLevel::Warn, std::string("Prometheus listener: ") + e.what());
    }
  });
}

void Observability::on_http_accept() {
  for (;;) {
    const int fd = accept4(http_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    if (http_clients_.size() >= kMaxHttpClients || server_ == nullptr) {
      close(fd);
      continue;
    }
    http_clients_[fd] = HttpClient{{}, Clock::now() + kHttpIdle};
    server_->watch(fd, [this, fd] {
      try {
        on_http_readable(fd);
      } catch (const std::exception& e) {
        log(LogLevel::Warn, std::string("Prometheus request: ") + e.what());
        close_http_client(fd);
      }
    });
  }
}

void Observability::close_http_client(int fd) {
  if (server_ != nullptr) server_->unwatch(fd);
  close(fd);
  http_clients_.erase(fd);
}

void Observability::on_http_readable(int fd) {
  auto it = http_clients_.find(fd);
  if (it == http_clients_.end()) return;
  HttpClient& c = it->second;
  char buf[4096];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      if (c.in.size() > kMaxHttpRequestBytes) break;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
      close_http_client(fd);
      return;
    }
    break;
  }
  std::string status, body, type = "text/plain; charset=utf-8";
  if (c.in.size() > kMaxHttpRequestBytes) {
    status = "431 Request Header Fields Too Large";
    body = "request too large\n";
  } else if (c.in.find("\r\n\r\n") == std::string::npos && c.in.find("\n\n") == std::string::npos) {
    return;  // wait for the rest of the headers
  } else {
    const std::string line = c.in.substr(0, c.in.find_first_of("\r\n"));
    if (line.rfind("GET /metrics ", 0) == 0 || line == "GET /metrics") {
      status = "200 OK";
      body = prometheus_text(stats());
      type = "text/plain; version=0.0.4; charset=utf-8";
    } else {
      status = "404 Not Found";
      body = "only GET /metrics is served here\n";
    }
  }
  const std::string response = "HTTP/1.0 " + status + "\r\nContent-Type: " + type +
                               "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
                               body;
  // The answer is small (a few KiB per SA); give the socket at most 1 s rather than buffer per client.
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  bool blocking = false;
  size_t sent = 0;
  const auto give_up = Clock::now() + std::chrono::seconds(2);  // a slow reader gets a cut answer, not the loop
  while (sent < response.size() && Clock::now() < give_up) {
    const ssize_t n = send(fd, response.data() + sent, response.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !blocking) {
      // Non-blocking socket full: wait for room, bounded by SO_SNDTIMEO.
      const int fl = fcntl(fd, F_GETFL);
      fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
      blocking = true;
      continue;
    }
    break;
  }
  close_http_client(fd);
}

}  // namespace ov2
