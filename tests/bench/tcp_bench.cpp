// The "tcp" group: iperf3 TCP throughput through ipsecov2, the plain veth and
// strongSwan, each measured by its script in scripts/bench/ in the same run.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "bench_common.h"

namespace ov2::bench {
namespace {

struct ScriptResult {
  std::optional<double> gbps;  // the "KEY VALUE" line, if the script succeeded
  std::string why;             // the script's last ERROR line otherwise
};

// Runs `script SECONDS`, its stderr copied to ours (and kept), and reads the
// "KEY VALUE" line from its stdout.
ScriptResult run_script(const std::string& script, const std::string& key, unsigned seconds,
                        const std::string& build_dir) {
  char log_template[] = "/tmp/ov2bench-log.XXXXXX";
  char out_template[] = "/tmp/ov2bench-out.XXXXXX";
  const int log_fd = mkstemp(log_template);
  if (log_fd >= 0) close(log_fd);
  const int out_fd = mkstemp(out_template);
  if (out_fd >= 0) close(out_fd);
  // Output into files, not a pipe: system() returns when the script exits,
  // even if a process it left behind still holds its stdout.
  const std::string cmd = "BUILD_DIR='" + build_dir + "' '" + script + "' " + std::to_string(seconds) + " >'" +
                          out_template + "' 2>'" + log_template + "'";
  std::fprintf(stderr, "ipsecov2-bench: running %s %u\n", script.c_str(), seconds);
  const int status = std::system(cmd.c_str());
  ScriptResult result;
  {
    std::ifstream lines(out_template);
    std::string k;
    double v = 0;
    while (lines >> k >> v)
      if (k == key && WIFEXITED(status) && WEXITSTATUS(status) == 0) result.gbps = v;
  }
  std::remove(out_template);
  std::ifstream log(log_template);
  std::string line;
  while (std::getline(log, line)) {
    std::fprintf(stderr, "  %s\n", line.c_str());
    if (line.find("ERROR") != std::string::npos) result.why = line;
  }
  std::remove(log_template);
  if (!result.gbps && result.why.empty()) result.why = script + " failed without an ERROR line";
  return result;
}

}  // namespace

void run_tcp_benchmarks(Report& report, const std::string& scripts_dir, const std::string& build_dir,
                        unsigned seconds) {
  const std::string note = "iperf3 TCP " + std::to_string(seconds) + " s, receiver";
  const auto ov2 = run_script(scripts_dir + "/tcp_ov2.sh", "tcp_gbps_ov2", seconds, build_dir);
  const auto plain = run_script(scripts_dir + "/tcp_plain.sh", "tcp_gbps_plain", seconds, build_dir);
  const auto swan = run_script(scripts_dir + "/tcp_strongswan.sh", "tcp_gbps_strongswan", seconds, build_dir);
  if (ov2.gbps) report.add("tcp_gbps_ov2", *ov2.gbps, "Gbit/s", note + ", ipsecov2 AES-GCM-128 tunnel");
  else report.add_note("tcp_gbps_ov2", ov2.why);
  if (plain.gbps) report.add("tcp_gbps_plain", *plain.gbps, "Gbit/s", note + ", plain veth");
  else report.add_note("tcp_gbps_plain", plain.why);
  if (swan.gbps) report.add("tcp_gbps_strongswan", *swan.gbps, "Gbit/s", note + ", strongSwan kernel-libipsec");
  else report.add_note("tcp_gbps_strongswan", swan.why);
  if (ov2.gbps && swan.gbps && *swan.gbps > 0)
    report.add("tcp_ratio_vs_strongswan", *ov2.gbps / *swan.gbps, "ratio", "ov2 / strongswan");
  else
    report.add_note("tcp_ratio_vs_strongswan", "needs both tcp_gbps_ov2 and tcp_gbps_strongswan");
}

}  // namespace ov2::bench
