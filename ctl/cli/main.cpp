// ipsecov2ctl: a thin client of ipsecov2d's control socket (control/protocol.h).
// Keys are read from files or standard input, never from the command line,
// and never printed.
#include <openssl/crypto.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "cli/key_file.h"
#include "cli/observe.h"
#include "cli/table.h"
#include "common/cli_usage.h"
#include "common/error.h"
#include "control/control_client.h"
#include "control/protocol.h"
#include "model/algorithms.h"
#include "model/sa_json.h"
#include "ov2_abi.h"
#include "pcap/pcap_cli.h"

namespace {

using nlohmann::json;
using ov2::ErrorCode;
using ov2::fail;

// sa add's options, as given.
struct SaAddArgs {
  std::string dir, mode, src, dst, spi;
  std::string aead, key_file, enc, enc_key_file, auth, auth_key_file;
  bool esn = false;
  std::string seq_hi;
  std::string encap, encap_sport, encap_dport, replay_window;
  std::string life_packets, life_bytes, life_seconds, inner;
};

struct PolicyAddArgs {
  std::string dir, src, dst, proto, sport, dport, action, sa, priority;
};

void wipe_string(std::string& s) {
  OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

// A number option passed on as a JSON number (decimal or 0x hex).
json number(const std::string& option, const std::string& text) {
  try {
    size_t pos = 0;
    const unsigned long long v = std::stoull(text, &pos, 0);
    if (pos != text.size() || text.empty() || text[0] == '-') throw std::invalid_argument(text);
    return v;
  } catch (const std::exception&) {
    fail(ErrorCode::InvalidArgument, option + " must be a number, not '" + text + "'");
  }
}

json build_sa(const SaAddArgs& a) {
  json sa = {{"dir", a.dir}, {"mode", a.mode}, {"src", a.src}, {"dst", a.dst}, {"spi", a.spi}};
  const bool aead = !a.aead.empty();
  const bool split = !a.enc.empty() || !a.auth.empty();
  if (aead == split)
    fail(ErrorCode::InvalidArgument,
         "give either --aead NAME --key-file FILE, or --enc NAME --enc-key-file FILE --auth NAME --auth-key-file FILE");
  int from_stdin = 0;
  for (const std::string* f : {&a.key_file, &a.enc_key_file, &a.auth_key_file}) from_stdin += *f == "-";
  if (from_stdin > 1) fail(ErrorCode::InvalidArgument, "only one key can be read from standard input ('-')");
  if (aead) {
    if (!a.enc_key_file.empty() || !a.auth_key_file.empty())
      fail(ErrorCode::InvalidArgument, "--aead takes one key: give --key-file, not --enc-key-file/--auth-key-file");
    if (a.key_file.empty()) fail(ErrorCode::InvalidArgument, "--aead needs --key-file FILE (or - for standard input)");
    sa["aead"] = a.aead;
    std::string key = ov2::read_key_text(a.key_file);
    sa["key"] = key;
    wipe_string(key);
  } else {
    if (!a.key_file.empty())
      fail(ErrorCode::InvalidArgument, "--key-file is for --aead; with --enc give --enc-key-file and --auth-key-file");
    if (a.enc.empty()) fail(ErrorCode::InvalidArgument, "--auth needs --enc NAME (use --enc null for integrity only)");
    if (a.auth.empty()) fail(ErrorCode::InvalidArgument, "--enc needs --auth NAME --auth-key-file FILE");
    sa["enc"] = a.enc;
    if (!a.enc_key_file.empty()) {
      std::string key = ov2::read_key_text(a.enc_key_file);
      sa["enc-key"] = key;
      wipe_string(key);
    } else if (a.enc != "null" && a.enc != "ecb(cipher_null)") {
      fail(ErrorCode::InvalidArgument, "--enc " + a.enc + " needs --enc-key-file FILE (or - for standard input)");
    }
    sa["auth"] = a.auth;
    if (a.auth_key_file.empty())
      fail(ErrorCode::InvalidArgument, "--auth " + a.auth + " needs --auth-key-file FILE (or - for standard input)");
    std::string key = ov2::read_key_text(a.auth_key_file);
    sa["auth-key"] = key;
    wipe_string(key);
  }
  if (a.esn) sa["esn"] = true;
  if (!a.seq_hi.empty()) sa["seq-hi"] = number("--seq-hi", a.seq_hi);
  if (!a.encap.empty()) sa["encap"] = a.encap;
  if (!a.encap_sport.empty()) sa["encap-sport"] = number("--encap-sport", a.encap_sport);
  if (!a.encap_dport.empty()) sa["encap-dport"] = number("--encap-dport", a.encap_dport);
  if (!a.replay_window.empty()) sa["replay-window"] = number("--replay-window", a.replay_window);
  if (!a.life_packets.empty()) sa["lifetime-packets"] = a.life_packets;
  if (!a.life_bytes.empty()) sa["lifetime-bytes"] = a.life_bytes;
  if (!a.life_seconds.empty()) sa["lifetime-seconds"] = a.life_seconds;
  if (!a.inner.empty()) sa["inner"] = a.inner;
  return sa;
}

json build_policy(const PolicyAddArgs& a) {
  json p = {{"dir", a.dir}, {"src", a.src}, {"dst", a.dst}, {"action", a.action}};
  if (!a.proto.empty()) p["proto"] = a.proto;
  if (!a.sport.empty()) p["sport"] = a.sport;
  if (!a.dport.empty()) p["dport"] = a.dport;
  if (!a.sa.empty()) p["sa"] = a.sa;
  if (!a.priority.empty()) p["priority"] = number("--priority", a.priority);
  return p;
}

std::string mask_names(uint32_t mask, bool enc) {
  std::string out;
  auto add = [&](uint32_t id, const char* name) {
    if ((mask & id) == 0 || id == 0) return;
    out += (out.empty() ? "" : ",") + std::string(name);
  };
  if (enc)
    for (const auto& i : ov2::enc_algorithms()) add(i.ndis_id, i.name);
  else
    for (const auto& i : ov2::auth_algorithms()) add(i.ndis_id, i.name);
  return out;
}

std::string hex(uint64_t v) { return ov2::handle_to_string(v); }

std::string bool_text(const json& v) { return v.get<bool>() ? "yes" : "no"; }

std::string lifetime_text(const json& v) {
  if (!v.is_array() || v.size() != 2) return "-";
  if (v[0] == 0 && v[1] == 0) return "-";
  return v[0].dump() + "," + v[1].dump();
}

std::string algorithms_text(const json& sa) {
  if (sa.contains("aead")) return sa["aead"].get<std::string>() + " (" + sa["key-bytes"].dump() + "-byte key)";
  return sa["enc"].get<std::string>() + " (" + sa["enc-key-bytes"].dump() + ")+" + sa["auth"].get<std::string>() +
         " (" + sa["auth-key-bytes"].dump() + ")";
}

void print_caps(const json& c) {
  ov2::TextTable t({"CAPABILITY", "VALUE"});
  for (const char* k :
       {"IPv6", "IPv4Options", "IPv6NonIPsecExtensionHeaders", "Ah", "Esp", "AhEspCombined", "Transport", "Tunnel",
        "TransportTunnelCombined", "LsoSupported", "ExtendedSequenceNumbers", "ChaCha20Poly1305"})
    t.add_row({k, bool_text(c.at(k))});
  const uint32_t udp = c.at("UdpEsp").get<uint32_t>();
  std::string udp_names;
  auto udp_add = [&](uint32_t bit, const char* n) {
    if (udp & bit) udp_names += (udp_names.empty() ? "" : ",") + std::string(n);
  };
  udp_add(IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT, "transport");
  udp_add(IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TUNNEL, "tunnel");
  udp_add(IPSEC_OFFLOAD_V2_TRANSPORT_OVER_UDP_ESP_ENCAPSULATION_TUNNEL, "transport-over-udp-tunnel");
  udp_add(IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT_OVER_TUNNEL, "udp-transport-over-tunnel");
  t.add_row({"UdpEsp", hex(udp) + " " + udp_names});
  const uint32_t auth = c.at("AuthenticationAlgorithms").get<uint32_t>();
  const uint32_t enc = c.at("EncryptionAlgorithms").get<uint32_t>();
  t.add_row({"AuthenticationAlgorithms", hex(auth) + " " + mask_names(auth, false)});
  t.add_row({"EncryptionAlgorithms", hex(enc) + " " + mask_names(enc, true)});
  t.add_row({"SaOffloadCapacity", c.at("SaOffloadCapacity").dump()});
  t.add_row({"Engine", c.at("Engine").get<std::string>()});
  if (c.contains("Crypto") && !c.at("Crypto").get<std::string>().empty())
    t.add_row({"Crypto", c.at("Crypto").get<std::string>()});
  t.print(std::cout);
}

std::vector<std::string> sa_row(const json& sa) {
  std::string encap = sa["encap"].get<std::string>();
  if (encap == "udp") encap += " " + sa["encap-sport"].dump() + "->" + sa["encap-dport"].dump();
  return {sa["handle"].get<std::string>(),
          sa["dir"].get<std::string>(),
          sa["mode"].get<std::string>(),
          sa["src"].get<std::string>(),
          sa["dst"].get<std::string>(),
          hex(sa["spi"].get<uint64_t>()),
          algorithms_text(sa),
          sa["esn"].get<bool>() ? "esn hi=" + sa["seq-hi"].dump() : "-",
          encap,
          sa.contains("inner") ? sa["inner"].get<std::string>() : "-",
          sa.value("engine", std::string("-"))};
}

void print_sa_list(const json& sas) {
  ov2::TextTable t({"HANDLE", "DIR", "MODE", "SRC", "DST", "SPI", "ALGORITHMS", "ESN", "ENCAP", "INNER", "ENGINE"});
  for (const auto& sa : sas) t.add_row(sa_row(sa));
  t.print(std::cout);
}

void print_sa(const json& sa) {
  ov2::TextTable t({"FIELD", "VALUE"});
  t.add_row({"handle", sa["handle"].get<std::string>()});
  t.add_row({"direction", sa["dir"].get<std::string>()});
  t.add_row({"mode", sa["mode"].get<std::string>()});
  t.add_row({"source", sa["src"].get<std::string>()});
  t.add_row({"destination", sa["dst"].get<std::string>()});
  t.add_row({"spi", hex(sa["spi"].get<uint64_t>()) + " (" + sa["spi"].dump() + ")"});
  if (sa.contains("aead")) {
    t.add_row({"aead", sa["aead"].get<std::string>()});
    t.add_row({"key length", sa["key-bytes"].dump() + " bytes"});
  } else {
    t.add_row({"encryption", sa["enc"].get<std::string>()});
    t.add_row({"encryption key length", sa["enc-key-bytes"].dump() + " bytes"});
    t.add_row({"authentication", sa["auth"].get<std::string>()});
    t.add_row({"authentication key length", sa["auth-key-bytes"].dump() + " bytes"});
  }
  t.add_row({"engine", sa.value("engine", std::string("-"))});
  t.add_row({"esn", bool_text(sa["esn"])});
  if (sa.contains("seq-hi")) t.add_row({"seq-hi", sa["seq-hi"].dump()});
  t.add_row({"encap", sa["encap"].get<std::string>()});
  if (sa.contains("encap-sport"))
    t.add_row({"encap ports", sa["encap-sport"].dump() + " -> " + sa["encap-dport"].dump()});
  t.add_row({"replay window", sa["replay-window"].dump()});
  t.add_row({"lifetime packets", lifetime_text(sa["lifetime-packets"])});
  t.add_row({"lifetime bytes", lifetime_text(sa["lifetime-bytes"])});
  t.add_row({"lifetime seconds", lifetime_text(sa["lifetime-seconds"])});
  if (sa.contains("inner")) t.add_row({"inner (transport) SA", sa["inner"].get<std::string>()});
  if (sa.contains("bundled-in")) t.add_row({"inside bundle", sa["bundled-in"].get<std::string>()});
  if (sa.contains("kernel-counters"))
    for (const auto& [name, value] : sa["kernel-counters"].items()) t.add_row({"kernel " + name, value.dump()});
  t.print(std::cout);
}

void print_policy_list(const json& policies) {
  ov2::TextTable t({"ID", "DIR", "PRIORITY", "SRC", "DST", "PROTO", "SPORT", "DPORT", "ACTION", "SA"});
  for (const auto& p : policies)
    t.add_row({p["id"].dump(), p["dir"].get<std::string>(), p["priority"].dump(), p["src"].get<std::string>(),
               p["dst"].get<std::string>(), p["proto"].get<std::string>(), p["sport"].get<std::string>(),
               p["dport"].get<std::string>(), p["action"].get<std::string>(),
               p.contains("sa") ? p["sa"].get<std::string>() : "-"});
  t.print(std::cout);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ipsecov2ctl - control ipsecov2d (IPsec ESP offload)"};
  app.require_subcommand(1);
  std::string socket_path = ov2::kDefaultSocketPath;
  bool as_json = false;
  app.add_option("--socket", socket_path, "control socket of ipsecov2d")->capture_default_str();
  app.add_flag("--json", as_json, "print JSON instead of tables");

  auto* caps = app.add_subcommand("caps", "show the engine's offload capabilities (NDIS_IPSEC_OFFLOAD_V2)");

  auto* sa = app.add_subcommand("sa", "security associations");
  sa->require_subcommand(1);
  SaAddArgs add;
  auto* sa_add = sa->add_subcommand("add", "add an SA; prints its handle");
  sa_add->add_option("--dir", add.dir, "in|out")->required()->check(CLI::IsMember({"in", "out"}));
  sa_add->add_option("--mode", add.mode, "tunnel|transport")->required()->check(CLI::IsMember({"tunnel", "transport"}));
  sa_add->add_option("--src", add.src, "source address")->required();
  sa_add->add_option("--dst", add.dst, "destination address")->required();
  sa_add->add_option("--spi", add.spi, "SPI, decimal or 0x hex")->required();
  sa_add->add_option("--aead", add.aead, "aes-gcm-128|aes-gcm-192|aes-gcm-256|chacha20-poly1305 (or ip-xfrm names)");
  sa_add->add_option("--key-file", add.key_file, "AEAD key||salt in hex ('-': standard input)");
  sa_add->add_option("--enc", add.enc, "aes-cbc-128|aes-cbc-192|aes-cbc-256|null (or cbc(aes))");
  sa_add->add_option("--enc-key-file", add.enc_key_file, "encryption key in hex ('-': standard input)");
  sa_add->add_option("--auth", add.auth, "hmac-sha256|hmac-sha1|aes-gmac-128|aes-gmac-192|aes-gmac-256");
  sa_add->add_option("--auth-key-file", add.auth_key_file, "authentication key in hex ('-': standard input)");
  sa_add->add_flag("--esn", add.esn, "extended (64-bit) sequence numbers");
  sa_add->add_option("--seq-hi", add.seq_hi, "ESN high-order 32 bits");
  sa_add->add_option("--encap", add.encap, "udp (RFC 3948)")->check(CLI::IsMember({"udp", "none"}));
  sa_add->add_option("--encap-sport", add.encap_sport, "UDP source port (default 4500)");
  sa_add->add_option("--encap-dport", add.encap_dport, "UDP destination port (default 4500)");
  sa_add->add_option("--replay-window", add.replay_window, "anti-replay window in packets (0: off)");
  sa_add->add_option("--lifetime-packets", add.life_packets, "SOFT,HARD (0: no limit)");
  sa_add->add_option("--lifetime-bytes", add.life_bytes, "SOFT,HARD (0: no limit)");
  sa_add->add_option("--lifetime-seconds", add.life_seconds, "SOFT,HARD (0: no limit)");
  sa_add->add_option("--inner", add.inner, "handle of the transport SA carried inside this tunnel SA");

  std::string batch_file;
  auto* sa_add_batch = sa->add_subcommand(
      "add-batch", "add many SAs in one request (all or none); prints their handles in order, one per line");
  sa_add_batch
      ->add_option("file", batch_file,
                   "JSON list of SAs as the protocol's sa.add takes them, keys in hex inside ('-': standard input); "
                   "keep it 0600 and remove it after use")
      ->required();

  std::vector<std::string> del_handles;
  bool del_force = false;
  auto* sa_del = sa->add_subcommand("del", "delete SAs (all or none)");
  sa_del->add_option("handles", del_handles, "SA handles")->required();
  sa_del->add_flag("--force", del_force, "also delete the policies that use these SAs");

  std::string update_handle, update_seq_hi;
  auto* sa_update = sa->add_subcommand("update", "set the ESN high-order sequence number");
  sa_update->add_option("handle", update_handle, "SA handle")->required();
  sa_update->add_option("--seq-hi", update_seq_hi, "new high-order 32 bits")->required();

  auto* sa_list = sa->add_subcommand("list", "list SAs (never shows keys)");
  std::string show_handle;
  auto* sa_show = sa->add_subcommand("show", "show one SA (never shows keys)");
  sa_show->add_option("handle", show_handle, "SA handle")->required();

  auto* policy = app.add_subcommand("policy", "security policies (SPD)");
  policy->require_subcommand(1);
  PolicyAddArgs padd;
  auto* policy_add = policy->add_subcommand("add", "add a policy; prints its id");
  policy_add->add_option("--dir", padd.dir, "in|out")->required()->check(CLI::IsMember({"in", "out"}));
  policy_add->add_option("--src", padd.src, "source prefix")->required();
  policy_add->add_option("--dst", padd.dst, "destination prefix")->required();
  policy_add->add_option("--proto", padd.proto, "tcp|udp|icmp|icmpv6|N");
  policy_add->add_option("--sport", padd.sport, "P or P-P");
  policy_add->add_option("--dport", padd.dport, "P or P-P");
  policy_add->add_option("--action", padd.action, "protect|bypass|discard")
      ->required()
      ->check(CLI::IsMember({"protect", "bypass", "discard"}));
  policy_add->add_option("--sa", padd.sa, "SA handle (protect)");
  policy_add->add_option("--priority", padd.priority, "lower wins (default 1000)");
  std::string policy_update_id, policy_update_sa;
  auto* policy_update =
      policy->add_subcommand("update", "switch a protect policy to another SA in one step (rekey: make-before-break)");
  policy_update->add_option("id", policy_update_id, "policy id")->required();
  policy_update->add_option("--sa", policy_update_sa, "the new SA handle")->required();
  std::vector<std::string> policy_del_ids;
  auto* policy_del = policy->add_subcommand("del", "delete policies (all or none)");
  policy_del->add_option("ids", policy_del_ids, "policy ids")->required();
  auto* policy_list = policy->add_subcommand("list", "list policies");

  ov2::StatsArgs stats_args;
  std::string watch_arg;
  auto* stats = app.add_subcommand("stats", "show counters: data plane, BPF programs, AF_XDP sockets, per SA");
  stats->add_flag("--json", stats_args.json, "print JSON");
  stats->add_flag("--prometheus", stats_args.prometheus, "print Prometheus text exposition");
  auto* watch_opt = stats->add_option("--watch", watch_arg, "repeat every SECONDS (default 1), showing rates")
                        ->expected(0, 1)
                        ->type_name("[SECONDS]");
  bool monitor_json = false;
  uint64_t monitor_count = 0;
  auto* monitor = app.add_subcommand("monitor", "print the daemon's events as they happen (until interrupted)");
  monitor->add_flag("--json", monitor_json, "one JSON object per line");
  monitor->add_option("--count", monitor_count, "stop after N events");

  // Offline commands that need no daemon (ctl/pcap): they run during parsing.
  ov2::register_pcap_commands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();  // pcap: its messages are printed already
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "ipsecov2ctl: error: %s (see --help)\n", ov2::cli_usage_error(app, e).c_str());
    return 2;
  }

  if (app.got_subcommand("pcap")) return 0;

  try {
    if (*stats) {
      stats_args.json = stats_args.json || as_json;
      if (watch_opt->count() > 0) {
        double seconds = 1;
        if (!watch_arg.empty()) {
          try {
            size_t pos = 0;
            seconds = std::stod(watch_arg, &pos);
            if (pos != watch_arg.size()) throw std::invalid_argument(watch_arg);
          } catch (const std::exception&) {
            fail(ErrorCode::InvalidArgument, "--watch takes a number of seconds, not '" + watch_arg + "'");
          }
        }
        stats_args.watch_seconds = seconds;
      }
      return ov2::run_stats(socket_path, stats_args);
    }
    if (*monitor) return ov2::run_monitor(socket_path, monitor_json || as_json, monitor_count);

    json request;
    if (*caps) {
      request = {{"op", "caps"}};
    } else if (*sa_add) {
      request = {{"op", "sa.add"}, {"sa", build_sa(add)}};
    } else if (*sa_add_batch) {
      std::string text = ov2::read_secret_file(
          batch_file, ov2::kMaxRequestBytes - 64, "batch file",
          "split it (at most " + std::to_string(ov2::kMaxBatchSas) + " SAs per request)", "a JSON list of SAs");
      json list = json::parse(text, nullptr, false);
      wipe_string(text);
      if (!list.is_array()) {
        ov2::wipe_secrets(list);
        fail(ErrorCode::InvalidArgument, "batch file " + batch_file + " is not a JSON list of SAs");
      }
      request = {{"op", "sa.add"}, {"sas", std::move(list)}};
    } else if (*sa_del) {
      json handles = json::array();
      for (const auto& h : del_handles) handles.push_back(h);
      request = {{"op", "sa.del"}, {"handles", handles}, {"force", del_force}};
    } else if (*sa_update) {
      request = {{"op", "sa.update"}, {"handle", update_handle}, {"seq-hi", number("--seq-hi", update_seq_hi)}};
    } else if (*sa_list) {
      request = {{"op", "sa.list"}};
    } else if (*sa_show) {
      request = {{"op", "sa.show"}, {"handle", show_handle}};
    } else if (*policy_add) {
      request = {{"op", "policy.add"}, {"policy", build_policy(padd)}};
    } else if (*policy_update) {
      request = {{"op", "policy.update"}, {"id", number("policy id", policy_update_id)}, {"sa", policy_update_sa}};
    } else if (*policy_del) {
      json ids = json::array();
      for (const auto& id : policy_del_ids) ids.push_back(number("policy id", id));
      request = {{"op", "policy.del"}, {"ids", ids}};
    } else if (*policy_list) {
      request = {{"op", "policy.list"}};
    }

    ov2::ControlClient client(socket_path);
    json answer = client.call(std::move(request));  // the request (with keys) is wiped by call()
    if (!answer.is_object() || !answer.contains("ok")) fail(ErrorCode::Internal, "ipsecov2d sent a malformed answer");
    if (!answer["ok"].get<bool>()) {
      const json& err = answer["error"];
      const std::string message = err.contains("message") ? err["message"].get<std::string>() : "unknown error";
      std::fprintf(stderr, "ipsecov2ctl: error: %s\n", message.c_str());
      return 1;
    }
    answer.erase("ok");
    if (as_json) {
      std::cout << answer.dump() << '\n';
      return 0;
    }
    if (*caps)
      print_caps(answer["caps"]);
    else if (*sa_add)
      std::cout << answer["handle"].get<std::string>() << '\n';
    else if (*sa_add_batch)
      for (const auto& h : answer["handles"]) std::cout << h.get<std::string>() << '\n';
    else if (*sa_del) {
      for (const auto& h : answer["deleted"]) std::cout << "deleted SA " << h.get<std::string>() << '\n';
      for (const auto& id : answer["deleted_policies"]) std::cout << "deleted policy " << id.dump() << '\n';
    } else if (*sa_update)
      std::cout << "updated SA " << update_handle << '\n';
    else if (*sa_list)
      print_sa_list(answer["sas"]);
    else if (*sa_show)
      print_sa(answer["sa"]);
    else if (*policy_add)
      std::cout << answer["id"].dump() << '\n';
    else if (*policy_update)
      std::cout << "updated policy " << policy_update_id << '\n';
    else if (*policy_del) {
      for (const auto& id : answer["deleted"]) std::cout << "deleted policy " << id.dump() << '\n';
    } else if (*policy_list)
      print_policy_list(answer["policies"]);
    return 0;
  } catch (const ov2::Error& e) {
    std::fprintf(stderr, "ipsecov2ctl: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ipsecov2ctl: error: %s\n", e.what());
    return 1;
  }
}
