// ipsecov2d: the IPsec offload daemon.  Loads the BPF programs, runs the
// engine, restores the SAs and policies of the previous run, serves the
// control socket until SIGTERM/SIGINT (SIGHUP reloads the configuration),
// then removes everything it created and exits 0.  The state file stays: it
// is what the next start restores (daemon/service_state.h).
//
// systemd (Type=notify): READY=1 once the socket listens, the data plane runs
// and the state is restored; STATUS= a one-line summary; RELOADING=1 ...
// READY=1 around a reload; STOPPING=1 at shutdown; WATCHDOG=1 at half of
// WATCHDOG_USEC from the event loop, so a stuck loop stops the pings.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>

#include "common/cli_usage.h"
#include "common/error.h"
#include "config/daemon_config.h"
#include "control/control_plane.h"
#include "control/control_server.h"
#include "control/log.h"
#include "control/observability.h"
#include "control/request_handler.h"
#include "daemon/heap_huge_pages.h"
#include "daemon/runtime.h"
#include "daemon/service_state.h"
#include "dataplane/link_watch.h"
#include "esp/crypto_backend.h"

namespace {

using namespace ov2;

// What the command line says; it overrides the configuration file, also at a reload.
struct CommandLine {
  std::string config_file, wire, offload_dev, socket_path, engine, nic_offload, group, log_level, state_dir, crypto;
  bool no_restore = false;
};

DaemonConfig build_config(const CommandLine& cl) {
  DaemonConfig config = cl.config_file.empty() ? DaemonConfig{} : load_config(cl.config_file);
  if (!cl.wire.empty()) config.wire_interfaces = {cl.wire};
  if (!cl.offload_dev.empty()) config.offload_dev = cl.offload_dev;
  if (!cl.socket_path.empty()) config.socket_path = cl.socket_path;
  if (!cl.engine.empty()) config.engine = cl.engine;
  if (!cl.nic_offload.empty()) config.nic_offload = cl.nic_offload;
  if (!cl.crypto.empty()) config.crypto = cl.crypto;
  if (!cl.group.empty()) config.socket_group = cl.group;
  if (!cl.log_level.empty()) config.log_level = parse_log_level(cl.log_level);
  if (!cl.state_dir.empty()) config.state_dir = cl.state_dir;
  // Two daemons must never share a state file: a daemon with its own socket
  // (a test, a second instance) keeps no state unless it is given its own
  // state directory.  Empty state_dir: not kept.
  const DaemonConfig defaults;
  if (cl.state_dir.empty() && config.state_dir == defaults.state_dir && config.socket_path != defaults.socket_path)
    config.state_dir.clear();
  return config;
}

// A periodic timerfd (the event loop watches it).
int make_timer(uint64_t interval_usec) {
  const int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  if (fd < 0) fail(ErrorCode::Kernel, std::string("timerfd_create: ") + std::strerror(errno));
  itimerspec spec{};
  spec.it_interval.tv_sec = static_cast<time_t>(interval_usec / 1000000);
  spec.it_interval.tv_nsec = static_cast<long>(interval_usec % 1000000) * 1000;
  spec.it_value = spec.it_interval;
  timerfd_settime(fd, 0, &spec, nullptr);
  return fd;
}

void drain(int fd) {
  uint64_t buf[16];
  while (read(fd, buf, sizeof buf) > 0) {
  }
}

// True if something accepts connections on the Unix socket `path`.
bool socket_answers(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) return false;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const bool answers = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return answers;
}

void notify(const std::string& text) { sd_notify(0, text.c_str()); }

std::string join(const std::vector<std::string>& keys) {
  std::string out;
  for (const auto& k : keys) out += (out.empty() ? "" : ", ") + k;
  return out;
}

// SIGHUP: re-reads the configuration file, applies what can change while
// traffic flows and says what needs a restart.  A bad file, or a new value
// the system refuses (an unknown group, an address the Prometheus listener
// cannot bind, an MTU the offload device does not take), changes nothing.
void reload(const CommandLine& cl, DaemonConfig& running, Runtime& runtime, Observability& observability,
            ControlServer& server) {
  if (cl.config_file.empty()) {
    log(LogLevel::Info, "reload: no --config file was given; nothing to reload");
    return;
  }
  DaemonConfig wanted;
  try {
    wanted = build_config(cl);
  } catch (const Error& e) {
    log(LogLevel::Error, std::string("reload refused, the running configuration stays: ") + e.what());
    return;
  }
  const ReloadPlan plan = plan_reload(running, wanted);
  auto changes = [&](const std::string& key) {
    return std::find(plan.applied.begin(), plan.applied.end(), key) != plan.applied.end();
  };
  // First everything that can fail, each step undone if a later one fails.
  Dataplane* dp = runtime.dataplane() != nullptr && runtime.dataplane()->running() ? runtime.dataplane() : nullptr;
  int new_listener = -1;
  bool mtu_set = false, group_set = false;
  try {
    std::optional<gid_t> gid;
    if (changes("control.group") && !wanted.socket_group.empty()) gid = lookup_group(wanted.socket_group);
    if (changes("offload_device.mtu") && dp != nullptr) {
      dp->set_route_mtu(wanted.offload_mtu);
      mtu_set = true;
    }
    if (changes("control.group")) {
      server.set_group(gid, wanted.socket_group);
      group_set = true;
    }
    // Last: on the same port it may have to close the running listener first.
    if (changes("stats.prometheus_listen") && !wanted.prometheus_listen.empty())
      new_listener = observability.prepare_prometheus_listener(wanted.prometheus_listen);
  } catch (const Error& e) {
    try {
      if (group_set)
        server.set_group(running.socket_group.empty() ? std::nullopt
                                                      : std::optional<gid_t>(lookup_group(running.socket_group)),
                         running.socket_group);
      if (mtu_set) dp->set_route_mtu(running.offload_mtu);
    } catch (const Error& undo) {
      log(LogLevel::Warn, std::string("reload: cannot undo a step: ") + undo.what());
    }
    log(LogLevel::Error, std::string("reload refused, the running configuration stays: ") + e.what());
    return;
  }
  std::vector<std::string> applied, restart = plan.restart_required;
  for (const std::string& key : plan.applied) {
    if (key == "daemon.log_level") {
      set_log_level(wanted.log_level);
      running.log_level = wanted.log_level;
    } else if (key == "verdict.mark") {
      runtime.programs().set_verdict_mark(wanted.verdict_mark);
      running.verdict_mark = wanted.verdict_mark;
    } else if (key == "sa_delete_req.policy") {
      observability.set_delete_on_request(wanted.sa_delete_req == SaDeleteReqPolicy::Delete);
      running.sa_delete_req = wanted.sa_delete_req;
    } else if (key == "control.group") {
      running.socket_group = wanted.socket_group;
      log(LogLevel::Info, "control socket " + running.socket_path + ": " +
                              (wanted.socket_group.empty() ? std::string("root only now")
                                                           : "group " + wanted.socket_group + " admitted now"));
    } else if (key == "stats.prometheus_listen") {
      observability.replace_prometheus_listener(new_listener, wanted.prometheus_listen);
      new_listener = -1;
      running.prometheus_listen = wanted.prometheus_listen;
      if (wanted.prometheus_listen.empty()) log(LogLevel::Info, "Prometheus metrics are no longer served");
    } else if (key == "offload_device.mtu") {
      running.offload_mtu = wanted.offload_mtu;
      if (dp != nullptr)
        log(LogLevel::Info, "offload device " + dp->device().host_name() + ": route MTU " +
                                std::to_string(dp->device().route_mtu()) + ", device MTU " +
                                std::to_string(dp->device().mtu()) + " (routes into it need mtu " +
                                std::to_string(dp->device().route_mtu()) + ")");
    } else {
      restart.push_back(key);  // live in principle, not wired up in this daemon yet
      continue;
    }
    applied.push_back(key);
  }
  log(LogLevel::Info, "reload of " + cl.config_file + ": applied: " + (applied.empty() ? "nothing" : join(applied)) +
                          (restart.empty() ? "" : "; needs a restart: " + join(restart)));
}

int run(const CommandLine& cl, DaemonConfig config) {
  set_log_level(config.log_level);

  // Signals arrive through signalfds so the event loop sees them in order.
  sigset_t stop_signals, hup_signal, all;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigemptyset(&hup_signal);
  sigaddset(&hup_signal, SIGHUP);
  sigemptyset(&all);
  sigaddset(&all, SIGTERM);
  sigaddset(&all, SIGINT);
  sigaddset(&all, SIGHUP);
  sigprocmask(SIG_BLOCK, &all, nullptr);
  signal(SIGPIPE, SIG_IGN);
  const int stop_fd = signalfd(-1, &stop_signals, SFD_CLOEXEC);
  const int hup_fd = signalfd(-1, &hup_signal, SFD_CLOEXEC | SFD_NONBLOCK);
  if (stop_fd < 0 || hup_fd < 0) fail(ErrorCode::Kernel, std::string("signalfd: ") + std::strerror(errno));

  ControlServerOptions server_opts;
  server_opts.path = config.socket_path;
  if (!config.socket_group.empty()) {
    server_opts.group = lookup_group(config.socket_group);
    server_opts.group_name = config.socket_group;
  }

  // A second daemon on the same socket or state directory is refused here,
  // before it could replace the running daemon's data plane or touch its
  // state file.  The socket itself appears only once the state is restored.
  if (socket_answers(config.socket_path))
    fail(ErrorCode::Exists, "another ipsecov2d answers on " + config.socket_path +
                                "; stop it first or give this one another --socket");
  std::optional<StateStore> store;
  if (!config.state_dir.empty())
    store.emplace(config.state_dir);
  else
    log(LogLevel::Info, "SAs and policies are not kept across restarts: --socket " + config.socket_path +
                            " is not the default one and no state directory was given (--state-dir)");

  // Before any SA exists (restored ones included): an SA keeps the backend it was made with.
  std::string crypto_fallback;
  const esp::CryptoBackend crypto = esp::select_crypto_backend(
      esp::parse_backend(config.crypto).value_or(esp::CryptoBackend::IpsecMb), &crypto_fallback);
  if (!crypto_fallback.empty()) log(LogLevel::Warn, "crypto: " + crypto_fallback);
  log(LogLevel::Info, "crypto: " + esp::crypto_backend_description(crypto));
  Runtime runtime(config);
  ControlPlane plane(runtime.engine(), runtime.engine().capabilities().sa_offload_capacity);
  RequestHandler handler(plane);
  ServiceState state(store ? &*store : nullptr, plane, runtime.dataplane());
  if (cl.no_restore && store)
    log(LogLevel::Info, "--no-restore: starting empty; " + store->path() + " is overwritten");
  else
    state.restore();
  runtime.engine().finish_restore();  // a killed run's kernel entries the restore did not take over
  state.save_at_start();              // in the background when the loaded files can be continued
  plane.add_listener(&state);
  ObservabilityOptions observability_opts;  // SaDeleteReq loop, monitor events, stats, /metrics
  observability_opts.delete_on_request = config.sa_delete_req == SaDeleteReqPolicy::Delete;
  observability_opts.prometheus_listen = config.prometheus_listen;
  observability_opts.wire = config.wire_interfaces.empty() ? "" : config.wire_interfaces.front();
  observability_opts.offload_device = config.offload_dev;
  Observability observability(plane, runtime.dataplane(), runtime.programs().events_fd(), observability_opts);
  handler.set_stats_source([&observability] { return observability.stats(); });

  auto status = [&] {
    std::string s = "serving " + config.socket_path + ", " + std::to_string(plane.sas().size()) + " SAs, " +
                    std::to_string(plane.spd().list().size()) + " policies, engine " + config.engine;
    s += config.wire_interfaces.empty() ? ", no wire" : ", wire " + config.wire_interfaces.front();
    return s;
  };
  std::string last_status;
  auto publish_status = [&](bool ready) {
    const std::string s = status();
    if (!ready && s == last_status) return;
    last_status = s;
    notify(std::string(ready ? "READY=1\n" : "") + "STATUS=" + s);
  };

  std::string fatal;  // why the daemon stops by itself (then it exits with status 1)
  auto control_server = std::make_unique<ControlServer>(
      server_opts, [&handler](std::string_view line) { return handler.handle_line(line); });
  {
    ControlServer& server = *control_server;
    observability.attach(server);
    // Group commit: the changes of one loop iteration are made durable before any of its answers goes out.
    // A change that cannot be made durable is answered "not-saved" (ServiceState::commit), and monitors hear it.
    server.set_before_answers(
        [&state, &observability] {
          std::string why = state.commit();
          if (!why.empty()) observability.bus().emit({{"event", "state-not-saved"}, {"message", why}});
          return why;
        },
        [&state] { return state.change_count(); });
    server.watch(hup_fd, [&] {
      signalfd_siginfo info{};
      while (read(hup_fd, &info, sizeof info) == sizeof info) {
        timespec now{};
        clock_gettime(CLOCK_MONOTONIC, &now);
        const uint64_t usec = static_cast<uint64_t>(now.tv_sec) * 1000000 + static_cast<uint64_t>(now.tv_nsec) / 1000;
        notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec) + "\nSTATUS=reloading the configuration");
        log(LogLevel::Info, "received SIGHUP, reloading the configuration");
        reload(cl, config, runtime, observability, server);
        publish_status(true);
      }
    });
    // The NIC engine's kernel SA events (XFRM expire / delete notifications).
    const int kernel_events_fd = runtime.engine().kernel_event_fd();
    if (kernel_events_fd >= 0)
      server.watch(kernel_events_fd, [&] {
        for (const KernelSaEvent& e : runtime.engine().read_kernel_events()) observability.on_kernel_sa_event(e);
      });
    // Once a second: save outbound sequence-number marks that traffic passed, refresh STATUS.
    const int tick_fd = make_timer(1000000);
    server.watch(tick_fd, [&] {
      drain(tick_fd);
      state.save_if_sequence_passed_mark();
      state.compact_when_idle();
      publish_status(false);
    });
    int watchdog_fd = -1;
    uint64_t watchdog_usec = 0;
    if (sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0) {
      watchdog_fd = make_timer(std::max<uint64_t>(watchdog_usec / 2, 1000));
      server.watch(watchdog_fd, [&] {
        drain(watchdog_fd);
        notify("WATCHDOG=1");
      });
      log(LogLevel::Info, "systemd watchdog: pinging every " + std::to_string(watchdog_usec / 2) + " us");
    }

    // Interfaces changed from outside.  The wire going down and up is
    // reported (the data plane stays attached and resumes by itself); the
    // offload device or the wire deleted cannot be repaired in place (the
    // routes into ov2, its programs and the workers' sockets went with it):
    // the daemon says so and stops with status 1, so that its supervisor
    // (systemd: Restart=on-failure) starts it again, which recreates the
    // device and restores the SAs and policies from the state directory.
    std::optional<LinkWatch> links;
    if (Dataplane* dp = runtime.dataplane(); dp != nullptr && dp->running()) {
      links.emplace();
      links->watch(dp->wire_ifindex(), config.wire_interfaces.front());
      links->watch(dp->device().host_ifindex(), config.offload_dev);
      links->watch(dp->device().nic_ifindex(), dp->device().nic_name());
      links->set_callback([&](const std::string& name, LinkWatch::Change change) {
        if (!fatal.empty()) return;  // stopping already (deleting ov2 takes ov2-nic with it: one report)
        const bool wire = name == config.wire_interfaces.front();
        observability.bus().emit({{"event", wire ? "wire-" + std::string(link_change_name(change))
                                                 : "device-" + std::string(link_change_name(change))},
                                  {"device", name},
                                  {"reason", "changed from outside ipsecov2d"}});
        if (change != LinkWatch::Change::Deleted) {
          log(change == LinkWatch::Change::Down ? LogLevel::Warn : LogLevel::Info,
              (wire ? "the wire " : "the offload device ") + name + " is " + link_change_name(change) +
                  (change == LinkWatch::Change::Down ? ": no traffic passes until it is up again"
                                                     : ": traffic resumes"));
          return;
        }
        fatal = (wire ? "the wire interface " : "the offload device ") + name +
                " was deleted from outside ipsecov2d (ip link del?); the data plane cannot run without it: stopping "
                "(restart ipsecov2d -- systemd does so by itself -- to recreate the offload device and restore the "
                "SAs and policies; routes into " +
                config.offload_dev + " must be added again)";
        log(LogLevel::Error, fatal);
        server.stop();
      });
      server.watch(links->fd(), [&] { links->poll(); });
    }

    log(LogLevel::Info,
        "serving " + config.socket_path + " (engine " + config.engine + ", pid " + std::to_string(getpid()) + ")");
    publish_status(true);
    server.run(stop_fd);
    if (links) server.unwatch(links->fd());
    if (kernel_events_fd >= 0) server.unwatch(kernel_events_fd);
    observability.detach();
    notify("STOPPING=1\nSTATUS=" + (fatal.empty() ? std::string("stopping") : "failed: " + fatal));
    signalfd_siginfo info{};
    if (fatal.empty() && read(stop_fd, &info, sizeof info) == sizeof info)
      log(LogLevel::Info, std::string("received ") + strsignal(static_cast<int>(info.ssi_signo)) + ", shutting down");
    close(tick_fd);
    if (watchdog_fd >= 0) close(watchdog_fd);
  }
  control_server.reset();  // socket file removed here
  plane.remove_listener(&state);
  state.save_at_stop();  // the last sequence-number marks (journal, or a snapshot if the journal is large)
  close(stop_fd);
  close(hup_fd);
  return fatal.empty() ? 0 : 1;  // then plane (SA keys wiped) and runtime (programs detached and unloaded)
}

}  // namespace

int main(int argc, char** argv) {
  ov2::reexec_with_heap_huge_pages(argv);  // before anything is allocated or opened
  // The daemon holds keys: no core dumps.  Our own key storage is MADV_DONTDUMP,
  // but OpenSSL's cipher contexts (key schedules) live on the ordinary heap.
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  CLI::App app{"ipsecov2d - IPsec ESP offload daemon (IPsec Task Offload V2 semantics)"};
  CommandLine cl;
  app.add_option("--config", cl.config_file, "TOML configuration file (command-line options override it)");
  app.add_option("--wire", cl.wire, "wire interface (ESP comes and goes here)");
  app.add_option("--offload-dev", cl.offload_dev, "offload device name (default ov2)");
  app.add_option("--socket", cl.socket_path, "control socket path (default /run/ipsecov2/ipsecov2.sock)");
  app.add_option("--engine", cl.engine, "afxdp: AF_XDP crypto worker (default); nic: the wire NIC through XFRM device offload; auto: the NIC where it can offload the SA, AF_XDP otherwise")
      ->check(CLI::IsMember({"afxdp", "nic", "auto"}));
  app.add_option("--nic-offload", cl.nic_offload,
                 "with --engine nic|auto: crypto (default; the NIC encrypts, kernel XFRM policies from the SPD steer "
                 "packets) or packet (XFRM packet offload: the NIC also holds the policies)")
      ->check(CLI::IsMember({"crypto", "packet"}));
  app.add_option("--crypto", cl.crypto,
                 "ipsec-mb (default; OpenSSL where intel-ipsec-mb cannot run) or openssl: the library the AF_XDP worker runs AES-GCM, AES-GMAC and "
                 "ChaCha20-Poly1305 on (AES-CBC/HMAC stay on OpenSSL)")
      ->check(CLI::IsMember({"openssl", "ipsec-mb"}));
  app.add_option("--group", cl.group, "group whose members may use the control socket (default: root only)");
  app.add_option("--log-level", cl.log_level, "error, warning, info or debug (default info)");
  app.add_option("--state-dir", cl.state_dir,
                 "where SAs and policies are kept across restarts (state.json; default /run/ipsecov2; with a "
                 "non-default --socket nothing is kept unless this is given)");
  app.add_flag("--no-restore", cl.no_restore, "start empty instead of restoring the saved SAs and policies");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "ipsecov2d: error: %s (see --help)\n", ov2::cli_usage_error(app, e).c_str());
    return 2;
  }
  try {
    return run(cl, build_config(cl));
  } catch (const ov2::Error& e) {
    std::fprintf(stderr, "ipsecov2d: error: %s\n", e.what());
    sd_notifyf(0, "STATUS=failed: %s", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ipsecov2d: internal error: %s\n", e.what());
    return 1;
  }
}
