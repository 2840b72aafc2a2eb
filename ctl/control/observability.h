// The daemon's observability and SaDeleteReq loop, driven from the control
// server's event loop (ControlServer::watch), single-threaded:
//
//  - the BPF event ring (ov2_verdict's SA_DELETE_REQ events) and, every
//    `tick` (a timerfd), the data plane's outbound delete requests (sequence
//    space / hard lifetime used up; looked for only when an SA raised one)
//    and the per-SA counters of the SAs with a lifetime limit or a failure
//    the workers noted (FailureNotes) -- not of every SA;
//  - SaDeleteReq handling (DESIGN.md §1, issue 4.4): for a request on SA H an
//    "sa-delete-req" event is raised; then, unless delete_on_request is off
//    (config sa_delete_req.policy = "notify"), H and its matching SA of the
//    other direction are deleted through ControlPlane::delete_sas with force
//    (policies using them are deleted too; their policy-deleted events carry
//    reason sa-delete-req / expired).  Requests for a handle already handled
//    are coalesced (counted in "duplicates" of the next event).
//    The matching SA of SA X: the other direction, same mode, same address
//    family, endpoints swapped (its src == X.dst and its dst == X.src; an
//    all-zero inbound src matches any); not an SA inside a bundle; if several
//    match, the most recently added (highest handle); if none, only X goes.
//    If X is the inner SA of a bundle, its tunnel SA goes with it.
//  - monitor events via EventBus: SA/policy changes (listener), sa-delete-req,
//    soft-expired / hard-expired (once per SA and limit, from counters vs
//    the SA's lifetimes), replay-failures / auth-failures / policy-failures
//    (decrypted packets the inbound SPD refused; at most one event per SA
//    and kind per second, carrying the count since the last event),
//    device-up/down and worker-up/down at start/stop;
//  - the optional Prometheus listener (stats.prometheus_listen): GET /metrics
//    only (anything else 404), requests bounded to 8 KiB, at most 8 clients,
//    idle clients closed after 5 s.
#pragma once

#include <array>
#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <queue>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "control/control_plane.h"
#include "control/event_bus.h"
#include "dataplane/sa_runtime.h"

struct ov2_event;

namespace ov2 {

class ControlServer;
class Dataplane;
class EventReader;

// What the periodic SA check reads from the data plane (Dataplane in the
// daemon; an interface so that tests can fake and count it).
class SaCounterSource {
 public:
  virtual ~SaCounterSource() = default;
  virtual bool running() const = 0;
  // Throws if `handle` is not installed.
  virtual SaRuntimeCounters sa_counters(uint64_t handle) const = 0;
  // Changes whenever an outbound SA starts asking to be deleted.
  virtual uint64_t delete_requests_raised() const = 0;
  // The outbound SAs asking to be deleted (a walk over every SA).
  virtual std::vector<uint64_t> outbound_delete_requests() const = 0;
  // Appends the SAs that counted a failure since the last call; false: some
  // were not noted, every SA must be looked at.
  virtual bool take_failed_sas(std::vector<uint64_t>& out) = 0;
};

struct ObservabilityOptions {
  bool delete_on_request = true;  // false: sa_delete_req.policy = "notify"
  std::string prometheus_listen;  // "ADDR:PORT" or "[ADDR6]:PORT"; empty: no listener
  std::chrono::milliseconds tick{500};
  std::string wire;            // for device events
  std::string offload_device;  // for device events
};

class Observability {
 public:
  // `plane` must outlive this object; `dataplane` may be null (no --wire);
  // `events_fd` is BpfPrograms::events_fd() (not owned; -1: none).  Registers
  // the event bus as a listener of `plane`.  Throws ov2::Error (e.g. the
  // Prometheus address cannot be bound).
  Observability(ControlPlane& plane, Dataplane* dataplane, int events_fd, ObservabilityOptions options);
  ~Observability();
  Observability(const Observability&) = delete;
  Observability& operator=(const Observability&) = delete;

  // Hooks into `server` (which must stay alive until detach()): watches the
  // event ring, the timer and the HTTP listener, publishes events to monitor
  // subscribers, and raises the device-up/worker-up events.
  void attach(ControlServer& server);
  // Raises device-down/worker-down, flushes subscribers and unhooks.  Idempotent.
  void detach();

  // The "stats" answer (stats_report.h).
  nlohmann::json stats() const;
  // For reload: switch between delete (true) and notify (false).
  void set_delete_on_request(bool on) { options_.delete_on_request = on; }
  // For reload of stats.prometheus_listen, in two steps so that a bad
  // address changes nothing: prometheus_listener() binds and listens on
  // `spec` ("ADDR:PORT" / "[ADDR6]:PORT"; throws ov2::Error in plain words),
  // then replace_prometheus_listener() closes the old listener and its
  // clients and serves `fd` (-1: no listener) from then on.
  // `bind_error`: the errno of a failed bind/listen.
  static int prometheus_listener(const std::string& spec, int* bind_error = nullptr);
  void replace_prometheus_listener(int fd, const std::string& spec);
  // prometheus_listener(spec), except when the running listener holds the
  // same port (another address on it, e.g. 127.0.0.1:9781 -> 0.0.0.0:9781):
  // then the running listener is closed first, and opened again if the new
  // one cannot be.  Throws like prometheus_listener.
  int prepare_prometheus_listener(const std::string& spec);
  const std::string& prometheus_listen() const { return options_.prometheus_listen; }
  EventBus& bus() { return bus_; }

  // Handles one data-plane delete request for `handle` (public for tests).
  // `cause` is SaDeleteReq (inbound, from the event ring) or Expired (outbound exhaustion).
  void handle_delete_request(uint64_t handle, ChangeCause cause, const char* source);
  // One timer tick (public for tests).  Its cost follows the SAs that need
  // looking at, not the SAs installed (issue #6): every tick reads the SAs
  // with a packets or bytes limit and those that counted a failure; an SA
  // whose only limits are in seconds is read at its first tick and then
  // when a limit is due.  A tick with 200 000 SAs of neither kind reads no
  // SA's counters.
  void on_tick();
  // Tests: read SA counters from `source` (not owned; null: none) instead of the Dataplane.
  void use_counter_source(SaCounterSource* source) { source_ = source; }
  // What the kernel said about an SA the NIC engine holds (Engine::
  // read_kernel_events): soft expire -> a "soft-expired" event (source
  // "kernel") so that the key manager rekeys; hard expire -> "hard-expired",
  // then the SA goes like an outbound SA whose hard lifetime the worker used
  // up (handle_delete_request, cause Expired, source "kernel-expired": with
  // its matching SA and its policies, or notify only under
  // sa_delete_req.policy = "notify"); deleted by someone else -> the same
  // with source "kernel-deleted".  Events about unknown handles are ignored.
  void on_kernel_sa_event(const KernelSaEvent& event);

 private:
  // What check_counters remembers about an SA.  Only an SA with a lifetime
  // limit or a failure counted gets one, and the failure part only once a
  // failure is counted: an SA without either has nothing to report, and a
  // watch for each of 100 000s of SAs cost 144 bytes apiece (issue #6).
  // An SA with a lifetime limit gets one when it is added (or, restored,
  // when this object is made), an SA without when a worker notes a failure
  // on it; its watch goes when it is deleted (the ControlPlane listener
  // watch_index_).  Which watched SAs a tick reads: polled_, unstarted_,
  // deadlines_ below.
  struct SaWatch {
    std::chrono::steady_clock::time_point first_seen;
    bool started = false;  // first_seen set: the first tick that saw the SA (as before the index)
    bool polled = false;   // read at every tick (in polled_)
    bool soft_reported = false;
    bool hard_reported = false;
    struct Failures {
      uint64_t seen = 0;     // last counter value
      uint64_t pending = 0;  // not yet reported
      std::chrono::steady_clock::time_point last{};
    };
    std::unique_ptr<std::array<Failures, 3>> failures;  // by kind (observability.cpp kFailureKinds)
  };

  void on_ring_event(const ov2_event& event);
  uint64_t matching_sa(const SaRecord& sa) const;
  // Lifetime and failure events from the per-SA counters of the watched SAs
  // that are due (polled_, unstarted_, deadlines_) and of those the workers
  // noted a failure on.
  void check_counters(std::chrono::steady_clock::time_point now);
  // The same for one SA (`watch`: its watch if the caller has it; else
  // looked up, O(log N), and made if the SA needs one).  False: its counters
  // could not be read (not in the data plane yet); nothing changed.
  bool check_sa(const SaRecord& r, std::chrono::steady_clock::time_point now, SaWatch* watch = nullptr);
  // After check_sa of an SA that is not polled: queues its next seconds limit, if one is left.
  void schedule(uint64_t handle, const SaSpec& spec, const SaWatch& w);
  // From now on `w` (the watch of `handle`) is read at every tick.
  void poll(uint64_t handle, SaWatch& w);
  // Drops a watch (its SA is gone); the next one.
  std::map<uint64_t, SaWatch>::iterator drop_watch(std::map<uint64_t, SaWatch>::iterator it);
  // Keeps watches_ in step with the SA database (added with a lifetime: a watch; deleted: none).
  void on_sa_change(const ChangeEvent& e);
  // An SA added (or restored): a watch if it has a lifetime limit, read at the next tick.
  void watch_added(const SaRecord& r);
  void open_http_listener();
  void watch_http_listener();
  void on_http_accept();
  void on_http_readable(int fd);
  void close_http_client(int fd);

  ControlPlane& plane_;
  Dataplane* dataplane_;
  ObservabilityOptions options_;
  EventBus bus_;
  std::unique_ptr<EventReader> reader_;
  int timer_fd_ = -1;
  int http_fd_ = -1;
  struct HttpClient {
    std::string in;
    std::chrono::steady_clock::time_point deadline;
  };
  std::map<int, HttpClient> http_clients_;
  ControlServer* server_ = nullptr;
  std::map<uint64_t, uint64_t> requested_;  // handle -> duplicate requests since it was handled
  std::map<uint64_t, SaWatch> watches_;
  struct WatchIndex : ControlPlane::Listener {
    Observability* self = nullptr;
    void on_change(const ChangeEvent& e) override { self->on_sa_change(e); }
  } watch_index_;
  std::unique_ptr<SaCounterSource> dataplane_source_;  // over dataplane_ (null: none)
  SaCounterSource* source_ = nullptr;                  // dataplane_source_, or a test's
  uint64_t delete_requests_seen_ = 0;                  // SaCounterSource::delete_requests_raised() last looked at
  std::vector<uint64_t> failed_;                       // take_failed_sas() buffer
  // Which watched SAs a tick reads.  Polled ones (SaWatch::polled): every
  // tick (a packets or bytes limit, which only the counters tell; or a
  // failure counted, reported rate-limited); polled_ lists their handles
  // (8 bytes each, once each; sorted when a tick needs it; a deleted SA's
  // handle stays until the list is rebuilt) and polled_count_ counts them.
  // unstarted_: once at the next tick (a new watch: that tick is the SA's
  // first_seen; or its counters could not be read yet).  deadlines_: an SA
  // that is not polled, at its next seconds limit (a min-heap; an entry whose
  // watch has gone is skipped when it comes up).
  std::vector<uint64_t> polled_;
  size_t polled_count_ = 0;
  std::vector<uint64_t> unstarted_;
  using Deadline = std::pair<std::chrono::steady_clock::time_point, uint64_t>;
  std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>> deadlines_;
  std::vector<uint64_t> due_;     // a tick's SAs to read besides the polled ones, in handle order
  std::vector<uint64_t> merged_;  // polled_ and due_
  void rebuild_polled();          // polled_ from the watches (sorted, no deleted SA)
};

}  // namespace ov2
