#include "pcap/pcap_cli.h"

#include <CLI/CLI.hpp>
#include <charconv>
#include <iostream>
#include <memory>
#include <string>

#include "common/error.h"
#include "esp/crypto_backend.h"
#include "pcap/capture_crypt.h"
#include "pcap/sa_file.h"

namespace ov2 {

namespace {

constexpr int kExitUsage = 2;

struct PcapArgs {
  std::string sa_file;
  std::vector<std::string> files;  // IN OUT
  std::string spi;
  bool keep_failed = false;
  bool no_replay = false;
  bool json = false;
  std::string crypto = "ipsec-mb";
};

const char* const kExitCodes =
    "Exit status: 0 every ESP packet opened (decrypt) / every packet an SA took was encrypted (encrypt); "
    "1 some packets failed (they are counted in the summary by status and reason); 2 usage, SA-file or capture-file "
    "error.";

const char* const kSaFileHelp =
    "JSON file with one SA object or a list; keys are the `sa add` long options without dashes (dir, mode, src, dst, "
    "spi, aead+key or enc+enc-key+auth+auth-key, esn, seq-hi, encap, encap-sport, encap-dport, replay-window, "
    "lifetime-*, inner = index of the transport SA a tunnel SA carries); keys as hex strings.";

uint32_t parse_spi(const std::string& text) {
  std::string_view s = text;
  int base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    s.remove_prefix(2);
    base = 16;
  }
  uint32_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size())
    fail(ErrorCode::InvalidArgument, "--spi must be a number (decimal or 0x-hex), not '" + text + "'");
  return v;
}

// True if an enclosing command (ipsecov2ctl's global flags) was given --json.
bool global_json_flag(const CLI::App& sub) {
  for (const CLI::App* app = sub.get_parent(); app != nullptr; app = app->get_parent()) {
    const CLI::Option* opt = app->get_option_no_throw("--json");
    if (opt != nullptr && opt->count() > 0) return true;
  }
  return false;
}

// Runs one subcommand; returns the exit code.
int run(const std::string& command, const CLI::App& sub, const PcapArgs& a, std::ostream& out, std::ostream& err) {
  const std::string who = "ipsecov2ctl pcap " + command + ": ";
  if (!sub.remaining().empty()) {
    err << who << "unexpected argument '" << sub.remaining().front() << "'\n" << sub.help();
    return kExitUsage;
  }
  if (a.sa_file.empty() || a.files.size() != 2) {
    err << who << "usage: ipsecov2ctl pcap " << command << " --sa-file SA.json IN.pcap OUT.pcap\n";
    return kExitUsage;
  }
  const auto wanted = esp::parse_backend(a.crypto);
  if (!wanted) {
    err << who << "--crypto must be openssl or ipsec-mb, not '" << a.crypto << "'\n";
    return kExitUsage;
  }
  std::string fallback;
  const esp::CryptoBackend crypto = esp::select_crypto_backend(*wanted, &fallback);
  if (!fallback.empty()) err << who << "crypto: " << fallback << "\n";
  pcap::CryptSummary summary;
  try {
    pcap::CryptOptions opt;
    opt.input = a.files[0];
    opt.output = a.files[1];
    opt.sa_file = a.sa_file;
    opt.keep_failed = a.keep_failed;
    opt.no_replay = a.no_replay;
    if (!a.spi.empty()) opt.spi = parse_spi(a.spi);
    const auto sas = pcap::load_sa_file(a.sa_file);
    summary = command == "encrypt" ? pcap::encrypt_capture(sas, opt) : pcap::decrypt_capture(sas, opt);
  } catch (const Error& e) {
    err << who << e.what() << "\n";
    return kExitUsage;
  }
  if (a.json || global_json_flag(sub)) {
    nlohmann::json j = pcap::summary_json(summary);
    j["crypto"] = esp::backend_name(crypto);
    out << j.dump(2) << "\n";
  } else {
    out << pcap::summary_text(summary);
  }
  return summary.exit_code();
}

void add_subcommand(CLI::App& pcap, const std::string& name, const std::string& description, std::ostream& out,
                    std::ostream& err, const PcapCommandDone& done) {
  auto args = std::make_shared<PcapArgs>();
  CLI::App* sub = pcap.add_subcommand(name, description);
  sub->footer(kExitCodes);
  // Checked in run(), so that usage errors exit with 2 like every other error.
  sub->allow_extras();
  sub->add_option("--sa-file", args->sa_file, kSaFileHelp);
  sub->add_option("files", args->files, "IN (pcap or pcapng) and OUT (pcap)");
  sub->add_flag("--keep-failed", args->keep_failed, "write packets that failed unchanged instead of leaving them out");
  if (name == "encrypt")
    sub->add_option("--spi", args->spi, "use only the outbound SA with this SPI (decimal or 0x-hex)");
  if (name == "decrypt")
    sub->add_flag("--no-replay", args->no_replay, "do not run the anti-replay window (duplicates open again)");
  sub->add_flag("--json", args->json, "print the summary as JSON");
  sub->add_option("--crypto", args->crypto,
                  "ipsec-mb (default) or openssl: the library for AES-GCM, AES-GMAC and ChaCha20-Poly1305 "
                  "(falls back to openssl, with a message, where intel-ipsec-mb cannot run)");
  sub->callback([sub, name, args, &out, &err, done]() { done(run(name, *sub, *args, out, err)); });
}

}  // namespace

void register_pcap_commands(CLI::App& app, std::ostream& out, std::ostream& err, const PcapCommandDone& done) {
  CLI::App* pcap = app.add_subcommand("pcap", "encrypt or decrypt capture files offline with SAs from a JSON file");
  // Not require_subcommand(1): its error would exit with CLI11's code, not 2.
  pcap->require_subcommand(0, 1);
  pcap->callback([pcap, &err, done]() {
    if (!pcap->get_subcommands().empty()) return;
    err << "ipsecov2ctl pcap: say what to do: encrypt or decrypt\n" << pcap->help();
    done(kExitUsage);
  });
  add_subcommand(*pcap, "encrypt",
                 "encrypt the IP packets of IN with the outbound SAs (dir out) of the SA file into OUT.  The SA for a "
                 "packet: first a transport SA (or a bundle's inner transport SA) with the packet's source and "
                 "destination, else the first tunnel SA whose outer family is the packet's, else the first tunnel SA. "
                 "Packets no SA takes and non-IP frames are written unchanged and counted.  OUT keeps IN's link type "
                 "(IPV4/IPV6 become RAW) and timestamps.",
                 out, err, done);
  add_subcommand(
      *pcap, "decrypt",
      "open the ESP packets (IP protocol 50, or UDP port 4500 with a non-zero SPI for SAs with encap udp) "
      "of IN with the inbound SAs (dir in), found by SPI and destination; a tunnel SA with 'inner' opens the "
      "transport SA inside too.  OUT is Ethernet: raw-IP input gets MACs 02:00:00:00:00:01 -> "
      "02:00:00:00:00:02.  Non-ESP frames are written unchanged; ESP that does not open is counted by "
      "NDIS CryptoStatus and reason.  Anti-replay runs like a live receiver.",
      out, err, done);
}

void register_pcap_commands(CLI::App& app) {
  register_pcap_commands(app, std::cout, std::cerr, [](int exit_code) {
    // CLI11's way out of a callback: parse() throws, the main returns the code.
    if (exit_code != 0) throw CLI::RuntimeError(exit_code);
  });
}

}  // namespace ov2
