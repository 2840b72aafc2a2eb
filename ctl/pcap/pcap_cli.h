// `ipsecov2ctl pcap encrypt|decrypt`: the CLI front of capture_crypt.h.
#pragma once

#include <functional>
#include <iosfwd>

namespace CLI {
class App;
}

namespace ov2 {

// Called once a pcap command has finished, with its exit code.
using PcapCommandDone = std::function<void(int exit_code)>;

// Adds the `pcap` command (subcommands `encrypt` and `decrypt`) to `app`.  The
// command runs inside app.parse() (a CLI11 callback); summaries go to `out`,
// errors to `err` (both must outlive `app`), and `done` receives the exit code:
// 0 every ESP packet opened / every packet an SA took was encrypted, 1 some
// failed, 2 usage or file error.
void register_pcap_commands(CLI::App& app, std::ostream& out, std::ostream& err, const PcapCommandDone& done);

// The same for ipsecov2ctl's main: std::cout/std::cerr; a non-zero exit code
// leaves app.parse() as CLI::RuntimeError(code) (messages already printed:
// the main returns e.get_exit_code()); on success parse() returns normally and
// the main returns 0 when app.got_subcommand("pcap").
void register_pcap_commands(CLI::App& app);

}  // namespace ov2
