// ipsecov2d: the IPsec offload daemon.  Loads the BPF programs, runs the
// engine, serves the control socket until SIGTERM/SIGINT, then removes
// everything it created and exits 0.
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <memory>

#include "common/error.h"
#include "config/daemon_config.h"
#include "control/control_plane.h"
#include "control/control_server.h"
#include "control/log.h"
#include "control/request_handler.h"
#include "daemon/runtime.h"

namespace {

int run(const ov2::DaemonConfig& config) {
  using namespace ov2;
  set_log_level(config.log_level);

  // Signals arrive through a signalfd so the event loop sees them in order.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigprocmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  const int stop_fd = signalfd(-1, &stop_signals, SFD_CLOEXEC);
  if (stop_fd < 0) fail(ErrorCode::Kernel, std::string("signalfd: ") + std::strerror(errno));

  ControlServerOptions server_opts;
  server_opts.path = config.socket_path;
  if (!config.socket_group.empty()) {
    server_opts.group = lookup_group(config.socket_group);
    server_opts.group_name = config.socket_group;
  }

  Runtime runtime(config);
  ControlPlane plane(runtime.engine(), runtime.engine().capabilities().sa_offload_capacity);
  RequestHandler handler(plane);
  {
    ControlServer server(server_opts, [&handler](std::string_view line) { return handler.handle_line(line); });
    log(LogLevel::Info,
        "serving " + config.socket_path + " (engine " + config.engine + ", pid " + std::to_string(getpid()) + ")");
    server.run(stop_fd);
    signalfd_siginfo info{};
    if (read(stop_fd, &info, sizeof info) == sizeof info)
      log(LogLevel::Info, std::string("received ") + strsignal(static_cast<int>(info.ssi_signo)) + ", shutting down");
  }  // socket file removed here
  close(stop_fd);
  return 0;  // then plane (SA keys wiped) and runtime (programs detached and unloaded)
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ipsecov2d - IPsec ESP offload daemon (IPsec Task Offload V2 semantics)"};
  std::string config_file, wire, offload_dev, socket_path, engine, group, log_level;
  app.add_option("--config", config_file, "TOML configuration file (command-line options override it)");
  app.add_option("--wire", wire, "wire interface (ESP comes and goes here)");
  app.add_option("--offload-dev", offload_dev, "offload device name (default ov2)");
  app.add_option("--socket", socket_path, "control socket path (default /run/ipsecov2/ipsecov2.sock)");
  app.add_option("--engine", engine, "engine: afxdp (nic: not available yet)")
      ->check(CLI::IsMember({"afxdp", "nic", "auto"}));
  app.add_option("--group", group, "group whose members may use the control socket (default: root only)");
  app.add_option("--log-level", log_level, "error, warning, info or debug (default info)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    ov2::DaemonConfig config = config_file.empty() ? ov2::DaemonConfig{} : ov2::load_config(config_file);
    if (!wire.empty()) config.wire_interfaces = {wire};
    if (!offload_dev.empty()) config.offload_dev = offload_dev;
    if (!socket_path.empty()) config.socket_path = socket_path;
    if (!engine.empty()) config.engine = engine;
    if (!group.empty()) config.socket_group = group;
    if (!log_level.empty()) config.log_level = ov2::parse_log_level(log_level);
    return run(config);
  } catch (const ov2::Error& e) {
    std::fprintf(stderr, "ipsecov2d: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ipsecov2d: internal error: %s\n", e.what());
    return 1;
  }
}
