// Hostile packets through ov2_wire, ov2_tx and ov2_deliver (issue 7, item 2):
// hundreds of thousands of malformed and adversarial frames, each run through
// BPF_PROG_TEST_RUN and checked against the reference classifier
// (hostile_reference.h): action, output bytes and data_meta frame by frame,
// counters as per-counter totals after every batch.
//
// Replay: every failure names the run seed and the case index; the same seed
// (OV2_HOSTILE_SEED=0x...) rebuilds the same frames.  OV2_HOSTILE_SCALE=<x>
// multiplies the number of generated cases (default 1).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

#include "hostile_generators.h"
#include "hostile_reference.h"
#include "spd_fixture.h"

namespace ov2::test::hostile {
namespace {

// A private instance of the programs: its maps hold only what this file puts
// there, so the reference knows the whole SA map and SPD (other suites leave
// SAs and policies in the binary-wide instance).
BpfPrograms& hostile_programs() {
  static BpfPrograms progs(BpfPrograms::Options{.cookie = 0x5eed0f0bad5c1a11ULL, .verdict_mark = 0});
  return progs;
}

uint64_t run_seed(uint64_t default_seed) {
  const char* env = std::getenv("OV2_HOSTILE_SEED");
  return env ? std::strtoull(env, nullptr, 0) : default_seed;
}

uint64_t scaled(uint64_t n) {
  const char* env = std::getenv("OV2_HOSTILE_SCALE");
  const double scale = env ? std::strtod(env, nullptr) : 1.0;
  return static_cast<uint64_t>(static_cast<double>(n) * (scale > 0 ? scale : 1.0));
}

std::string seed_text(uint64_t seed) {
  std::ostringstream s;
  s << "seed 0x" << std::hex << seed;
  return s.str();
}

std::string hex(const Bytes& b) {
  std::ostringstream s;
  for (size_t i = 0; i < b.size(); ++i) s << std::hex << std::setw(2) << std::setfill('0') << int{b[i]};
  return s.str();
}

const char* action_name(uint32_t action) {
  switch (action) {
    case XDP_ABORTED:
      return "ABORTED";
    case XDP_DROP:
      return "DROP";
    case XDP_PASS:
      return "PASS";
    case XDP_TX:
      return "TX";
    case XDP_REDIRECT:
      return "REDIRECT";
    default:
      return "?";
  }
}

// One program under test.
struct Target {
  std::string name;
  int prog_fd;
  std::function<std::vector<uint64_t>()> counters;
  std::vector<std::string> counter_names;  // index = counter enum
  std::function<Expected(const Bytes&)> expect;
};

const std::vector<std::string> kWireCounterNames = {"RX",
                                                    "PASS_NOT_IP",
                                                    "PASS_NOT_ESP",
                                                    "PASS_FRAGMENT",
                                                    "PASS_IKE",
                                                    "PASS_KEEPALIVE",
                                                    "PASS_NO_SA",
                                                    "PASS_MALFORMED",
                                                    "PASS_ENCAP_MISMATCH",
                                                    "PASS_NO_WORKER",
                                                    "REDIRECT",
                                                    "REDIRECT_FRAGMENT",
                                                    "PASS_FRAGMENT_NO_SA",
                                                    "PASS_EXT_TOO_DEEP"};
const std::vector<std::string> kTxCounterNames = {"RX",     "PROTECT",   "BYPASS",    "DISCARD",  "NO_POLICY",
                                                  "NOT_IP", "MALFORMED", "META_FAIL", "NO_WORKER"};
const std::vector<std::string> kDeliverCounterNames = {"RX",       "ACCEPTED",  "BAD_COOKIE",
                                                       "NOT_SHIM", "MALFORMED", "META_FAIL"};

// What a run did, for the assertions and the README table.
struct Report {
  uint64_t cases = 0;
  uint64_t refused = 0;  // shorter than an Ethernet header: the kernel does not run the program
  uint64_t mismatches = 0;
  uint64_t counter_mismatches = 0;
  std::map<std::string, uint64_t> outcomes;                        // outcome counter name -> frames
  std::map<std::string, std::map<std::string, uint64_t>> by_kind;  // kind -> outcome -> frames
  double seconds = 0;
};

using Generator = std::function<Case(uint64_t index)>;

constexpr uint64_t kBatch = 1000;
// BPF_PROG_TEST_RUN keeps a frame linear up to 4096 - 256 (headroom) - 320
// (skb_shared_info); longer ones get fragments, which a program without
// xdp.frags does not see (real devices with these programs have MTU <= 3506).
constexpr size_t kMaxLinearFrame = 3500;
constexpr int kMaxReported = 8;

std::string describe_expected(const Target& t, const Expected& e) {
  if (e.refused) return "refused by the kernel (shorter than Ethernet)";
  return std::string(action_name(e.action)) + " counter " + t.counter_names.at(e.counter) + " meta " +
         std::to_string(e.meta.size()) + "B";
}
std::string describe_actual(const XdpRun& r) {
  if (r.err != 0) return "test run refused, errno " + std::to_string(-r.err);
  return std::string(action_name(r.action)) + " meta " + std::to_string(r.meta.size()) + "B out " +
         std::to_string(r.frame.size()) + "B";
}

// Compares one run with the reference; returns what differs ("" = nothing).
std::string compare(const Expected& e, const XdpRun& r) {
  if (e.refused) return r.err != 0 ? "" : "the kernel ran a frame shorter than an Ethernet header";
  if (r.err != 0) return "the test run failed";
  if (r.action != e.action) return "action";
  if (e.action == XDP_PASS || e.action == XDP_REDIRECT) {
    if (r.frame != e.frame) return "output frame (expected " + hex(e.frame) + ", got " + hex(r.frame) + ")";
    if (r.meta != e.meta) return "data_meta (expected " + hex(e.meta) + ", got " + hex(r.meta) + ")";
  }
  return "";
}

// Runs cases [0, count) of `gen` through `t` and checks each against the
// reference; counters are compared as totals after every batch, and a batch
// whose totals differ is rerun frame by frame to name the frames.
Report run_cases(const Target& t, uint64_t seed, uint64_t count, const Generator& gen) {
  Report rep;
  const auto start = std::chrono::steady_clock::now();
  const size_t n_counters = t.counter_names.size();
  int reported = 0;
  auto report = [&](uint64_t index, const Case& c, const Expected& e, const std::string& what,
                    const std::string& actual) {
    if (reported++ >= kMaxReported) return;
    ADD_FAILURE() << t.name << " MISMATCH seed=0x" << std::hex << seed << std::dec << " case=" << index
                  << " kind=" << c.kind << ": " << what << "\n  frame (" << c.frame.size()
                  << " bytes): " << hex(c.frame) << "\n  reference: " << describe_expected(t, e)
                  << "\n  program:   " << actual;
  };

  for (uint64_t first = 0; first < count; first += kBatch) {
    const uint64_t last = std::min(count, first + kBatch);
    std::vector<uint64_t> want(n_counters, 0);
    std::vector<std::pair<Case, Expected>> batch;
    batch.reserve(last - first);
    const std::vector<uint64_t> before = t.counters();
    for (uint64_t i = first; i < last; ++i) {
      Case c = gen(i);
      if (c.frame.size() > kMaxLinearFrame) {
        ADD_FAILURE() << "generator made a " << c.frame.size() << "-byte frame (case " << i << ", kind " << c.kind
                      << "): beyond what the test run keeps linear";
        continue;
      }
      Expected e = t.expect(c.frame);
      const XdpRun r = run_xdp(t.prog_fd, c.frame);
      ++rep.cases;
      const std::string diff = compare(e, r);
      if (!diff.empty()) {
        ++rep.mismatches;
        report(i, c, e, diff, describe_actual(r));
      }
      const std::string outcome = e.refused ? "refused" : t.counter_names.at(e.counter);
      ++rep.outcomes[outcome];
      ++rep.by_kind[c.kind][outcome];
      if (e.refused) {
        ++rep.refused;
      } else {
        ++want[0];
        ++want[e.counter];
      }
      batch.emplace_back(std::move(c), std::move(e));
    }
    const std::vector<uint64_t> after = t.counters();
    std::vector<uint64_t> got(n_counters);
    for (size_t k = 0; k < n_counters; ++k) got[k] = after[k] - before[k];
    if (got == want) continue;
    ++rep.counter_mismatches;
    // Find the frames: one run each, counters read around it.
    for (uint64_t j = 0; j < batch.size(); ++j) {
      const auto& [c, e] = batch[j];
      if (e.refused) continue;
      const std::vector<uint64_t> b = t.counters();
      const XdpRun r = run_xdp(t.prog_fd, c.frame);
      const std::vector<uint64_t> a = t.counters();
      std::string counted;
      bool ok = true;
      for (size_t k = 0; k < n_counters; ++k) {
        const uint64_t d = a[k] - b[k];
        const uint64_t expected = (k == 0 ? 1u : 0u) + (k == e.counter ? 1u : 0u);
        if (d) counted += t.counter_names[k] + "+" + std::to_string(d) + " ";
        ok = ok && d == expected;
      }
      if (!ok) report(first + j, c, e, "counters", describe_actual(r) + ", counted " + counted);
    }
  }
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return rep;
}

// One line per generator kind with its outcomes: the README table's source.
void print_report(const std::string& title, const Report& rep) {
  std::cout << "[hostile] " << title << ": " << rep.cases << " frames (" << rep.refused << " refused <14B) in "
            << std::fixed << std::setprecision(2) << rep.seconds << " s, " << rep.mismatches << " mismatches, "
            << rep.counter_mismatches << " counter batches off\n";
  for (const auto& [kind, outcomes] : rep.by_kind) {
    uint64_t total = 0;
    std::string line;
    for (const auto& [o, n] : outcomes) {
      total += n;
      line += " " + o + "=" + std::to_string(n);
    }
    std::cout << "[hostile]   " << kind << " (" << total << "):" << line << "\n";
  }
}

void expect_clean(const std::string& title, const Report& rep) {
  print_report(title, rep);
  EXPECT_EQ(rep.mismatches, 0u) << title;
  EXPECT_EQ(rep.counter_mismatches, 0u) << title;
}

// Every outcome in `names` occurred: the generator reaches every rule.
void expect_outcomes_covered(const Report& rep, const std::vector<std::string>& names) {
  for (const std::string& n : names) EXPECT_GT(rep.outcomes.count(n) ? rep.outcomes.at(n) : 0u, 0u) << n;
}

// Frames of generator kind `kind` all ended in exactly the outcome `only`:
// a property stated without the reference (e.g. a shim on the wire is never
// anything but "not IP").
void expect_kind_only(const Report& rep, const std::string& kind, const std::string& only) {
  ASSERT_TRUE(rep.by_kind.count(kind)) << "no frames of kind " << kind;
  for (const auto& [outcome, n] : rep.by_kind.at(kind)) EXPECT_EQ(outcome, only) << kind << ": " << n << " frames";
}

// Case i of a systematic list: every prefix of every reference frame.
Generator truncations_of(const std::vector<std::pair<std::string, Bytes>>& frames, uint64_t* total) {
  std::vector<std::pair<uint64_t, size_t>> starts;  // (first index, frame)
  uint64_t n = 0;
  for (size_t i = 0; i < frames.size(); ++i) {
    starts.emplace_back(n, i);
    n += frames[i].second.size() + 1;  // lengths 0..size
  }
  *total = n;
  return [frames, starts](uint64_t index) {
    size_t f = 0;
    while (f + 1 < starts.size() && starts[f + 1].first <= index) ++f;
    const Bytes& full = frames[f].second;
    const size_t len = index - starts[f].first;
    return Case{"truncated " + frames[f].first, Bytes(full.begin(), full.begin() + static_cast<long>(len))};
  };
}

// ---------------------------------------------------------------------------
// ov2_wire
// ---------------------------------------------------------------------------

constexpr uint32_t kEspV4Spi = 0x1000, kNattV4Spi = 0x2000, kNattV4AnyPortSpi = 0x2001, kNattV4OtherPortSpi = 0x2002,
                   kEspV6Spi = 0x3000, kNattV6Spi = 0x4000, kTwoFamiliesSpi = 0x5000, kFlaggedSpi = 0x6000;

class HostileWireTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    install(kEspV4Spi, "192.0.2.2", 0, 0);
    install(kNattV4Spi, "192.0.2.2", OV2_SA_F_UDP_ENCAP, 4500);
    install(kNattV4AnyPortSpi, "192.0.2.2", OV2_SA_F_UDP_ENCAP, 0);
    install(kNattV4OtherPortSpi, "192.0.2.2", OV2_SA_F_UDP_ENCAP, 4501);
    install(kEspV6Spi, "2001:db8::2", 0, 0);
    install(kNattV6Spi, "2001:db8::2", OV2_SA_F_UDP_ENCAP, 4500);
    install(kTwoFamiliesSpi, "192.0.2.3", 0, 0);
    install(kTwoFamiliesSpi, "2001:db8::3", OV2_SA_F_UDP_ENCAP, 4500);
    install(kFlaggedSpi, "192.0.2.2", OV2_SA_F_ESN | OV2_SA_F_TUNNEL, 0);
    pools_.v4_src = {"198.51.100.1", "203.0.113.5"};
    pools_.v4_dst = {"192.0.2.2", "192.0.2.3", "192.0.2.9"};
    pools_.v6_src = {"2001:db8::1", "2001:db8:ff::5"};
    pools_.v6_dst = {"2001:db8::2", "2001:db8::3", "2001:db8::9"};
    pools_.spis = {kEspV4Spi, kNattV4Spi, kNattV4AnyPortSpi, kNattV4OtherPortSpi,
                   kEspV6Spi, kNattV6Spi, kTwoFamiliesSpi,   kFlaggedSpi};
  }

  static void install(uint32_t spi, const std::string& dst, uint32_t flags, uint16_t port) {
    ov2_sa_key key{};
    key.spi_be = htonl(spi);
    const Bytes d = addr(dst);
    key.family = d.size() == 4 ? OV2_AF_INET : OV2_AF_INET6;
    std::memcpy(key.daddr, d.data(), d.size());
    hostile_programs().put_inbound_sa(key, ov2_sa_value{0x100 + spi, flags, port, 0});
    world_.add(spi, dst, SaEntry{(flags & OV2_SA_F_UDP_ENCAP) != 0, port});
  }

  static Target target(bool worker_xsk) {
    world_.worker_xsk = worker_xsk;
    return Target{"ov2_wire", hostile_programs().wire_prog_fd(), [] { return hostile_programs().wire_counters(); },
                  kWireCounterNames, [](const Bytes& f) { return expect_wire(f, world_); }};
  }

  static Generator generator(uint64_t seed) {
    const uint64_t cookie = hostile_programs().cookie();
    return [seed, cookie](uint64_t i) { return generate_wire_case(case_seed(seed, i), pools_, cookie); };
  }

  static inline WireWorld world_;
  static inline WirePools pools_;
};

TEST_F(HostileWireTest, EveryTruncationOfEveryReferenceFrameMatchesTheReference) {
  uint64_t total = 0;
  const auto frames = wire_reference_frames(kEspV4Spi, kNattV4Spi, kEspV6Spi, kNattV6Spi);
  const Generator gen = truncations_of(frames, &total);
  const Report without = run_cases(target(false), 0, total, gen);
  expect_clean("ov2_wire truncations, no worker XSK", without);
  XskEnvironment xsk(hostile_programs().wire_xsks_map_fd());
  const Report with = run_cases(target(true), 0, total, gen);
  expect_clean("ov2_wire truncations, worker XSK", with);
  // The full frames are the reference shapes: each reaches its rule.
  expect_outcomes_covered(with, {"REDIRECT", "PASS_IKE", "PASS_KEEPALIVE", "PASS_MALFORMED", "refused"});
}

TEST_F(HostileWireTest, GeneratedHostileFramesWithAWorkerXskMatchTheReference) {
  XskEnvironment xsk(hostile_programs().wire_xsks_map_fd());
  const uint64_t seed = run_seed(0x0f2e1d0c0b0a0901ULL);
  const Report rep = run_cases(target(true), seed, scaled(400000), generator(seed));
  expect_clean("ov2_wire generated, worker XSK, " + seed_text(seed), rep);
  expect_outcomes_covered(rep, {"PASS_NOT_IP", "PASS_NOT_ESP", "PASS_FRAGMENT", "PASS_IKE", "PASS_KEEPALIVE",
                                "PASS_NO_SA", "PASS_MALFORMED", "PASS_ENCAP_MISMATCH", "REDIRECT"});
  expect_kind_only(rep, "forged-shim", "PASS_NOT_IP");  // never redirected, never metadata
}

TEST_F(HostileWireTest, GeneratedHostileFramesWithoutAWorkerXskMatchTheReference) {
  const uint64_t seed = run_seed(0x1badb002cafef00dULL);
  const Report rep = run_cases(target(false), seed, scaled(100000), generator(seed));
  expect_clean("ov2_wire generated, no worker XSK, " + seed_text(seed), rep);
  expect_outcomes_covered(rep, {"PASS_NO_WORKER", "PASS_MALFORMED", "PASS_NO_SA"});
}

TEST_F(HostileWireTest, Ipv6ChainsAroundTheSixHeaderWalkLimitMatchTheReference) {
  XskEnvironment xsk(hostile_programs().wire_xsks_map_fd());
  std::vector<std::pair<std::string, Bytes>> frames;
  Rng r(0x6c6);
  for (int options = 0; options <= 9; ++options) {
    for (bool fragment : {false, true}) {
      for (bool natt : {false, true}) {
        IpSpec s{.family = 6, .src = "2001:db8::1", .dst = "2001:db8::2"};
        for (int i = 0; i < options; ++i)
          s.v6_ext.push_back(ExtHeader{.type = r.pick(std::vector<uint8_t>{0, 43, 60}),
                                       .len_units = static_cast<uint8_t>(r.below(3))});
        if (fragment) s.v6_ext.push_back(ExtHeader{.type = 44});
        s.upper = natt ? Upper{kProtoUdp, udp_datagram(4500, 4500, esp_packet(kNattV6Spi, 1, Bytes(8, 1))), true}
                       : Upper{kProtoEsp, esp_packet(kEspV6Spi, 1, Bytes(8, 1)), false};
        frames.emplace_back(
            std::to_string(options) + " options" + (fragment ? " + fragment" : "") + (natt ? " natt" : " esp"),
            build_ip(s).frame);
      }
    }
  }
  const Target t = target(true);
  // The rule itself, pinned: six option headers are walked, a seventh is not.
  for (const auto& [name, frame] : frames) {
    const int options = std::stoi(name);
    const bool fragment = name.find("fragment") != std::string::npos;
    // Fragments of ESP and of UDP to a NAT-T SA's destination (both here) go to the worker.
    const uint32_t want = options > 6 ? OV2_WIRE_PASS_EXT_TOO_DEEP
                          : fragment  ? OV2_WIRE_REDIRECT_FRAGMENT
                                      : OV2_WIRE_REDIRECT;
    EXPECT_EQ(t.expect(frame).counter, want) << name;
  }
  uint64_t total = frames.size();
  const Report rep = run_cases(t, 0, total, [&frames](uint64_t i) { return Case{frames[i].first, frames[i].second}; });
  expect_clean("ov2_wire IPv6 chains 0..9 option headers", rep);
}

// ---------------------------------------------------------------------------
// ov2_tx
// ---------------------------------------------------------------------------

RefPolicy reference_policy(uint32_t id, const PolicyArgs& a) {
  RefPolicy p;
  p.id = id;
  auto split = [](const std::string& prefix, std::array<uint8_t, 16>* bytes, unsigned* len) {
    const size_t slash = prefix.find('/');
    const Bytes a = addr(prefix.substr(0, slash));
    std::copy(a.begin(), a.end(), bytes->begin());
    *len = slash == std::string::npos ? static_cast<unsigned>(a.size() * 8)
                                      : static_cast<unsigned>(std::stoul(prefix.substr(slash + 1)));
    return a.size() == 4 ? OV2_AF_INET : OV2_AF_INET6;
  };
  p.family = static_cast<uint8_t>(split(a.dst, &p.dst, &p.dst_len));
  if (!a.src.empty()) split(a.src, &p.src, &p.src_len);
  p.proto = a.proto;
  p.sport_lo = a.sport.lo;
  p.sport_hi = a.sport.hi;
  p.dport_lo = a.dport.lo;
  p.dport_hi = a.dport.hi;
  p.action = a.action == PolicyAction::Protect  ? OV2_SPD_PROTECT
             : a.action == PolicyAction::Bypass ? OV2_SPD_BYPASS
                                                : OV2_SPD_DISCARD;
  p.priority = a.priority;
  p.offload_handle = a.action == PolicyAction::Protect ? a.handle : 0;
  p.tunnel_handle = a.action == PolicyAction::Protect ? a.tunnel : 0;
  return p;
}

class HostileTxTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::vector<std::pair<uint32_t, PolicyArgs>> policies = {
        {1,
         {.dst = "10.1.0.0/16",
          .handle = 0xa1,
          .tunnel = 0xb1,
          .priority = 10,
          .proto = kProtoTcp,
          .dport = {443, 443}}},
        {2, {.dst = "10.1.0.0/16", .src = "10.0.0.0/24", .handle = 0xa2, .priority = 20}},
        {3,
         {.dst = "10.0.0.0/8",
          .action = PolicyAction::Discard,
          .priority = 30,
          .proto = kProtoUdp,
          .sport = {1000, 2000}}},
        {4, {.dst = "10.0.0.0/8", .action = PolicyAction::Bypass, .priority = 40}},
        {5, {.dst = "2001:db8:1::/48", .handle = 0xa5, .priority = 10, .proto = kProtoUdp, .dport = {4500, 4600}}},
        {6, {.dst = "2001:db8::/32", .src = "2001:db8:aa::/48", .action = PolicyAction::Bypass, .priority = 20}},
        {7, {.dst = "2001:db8:1::/48", .action = PolicyAction::Discard, .priority = 30}},
        {8, {.dst = "198.51.100.0/24", .handle = 0xa8, .priority = 5, .proto = kProtoSctp}},
        {9, {.dst = "198.51.100.7/32", .action = PolicyAction::Bypass, .priority = 50}},
        {10, {.dst = "2001:db8:1::5/128", .action = PolicyAction::Bypass, .priority = 5, .proto = kProtoIcmpv6}},
    };
    std::vector<CompiledPolicy> compiled;
    for (const auto& [id, args] : policies) {
      compiled.push_back(make_policy(id, args));
      world_.policies.push_back(reference_policy(id, args));
    }
    load_spd(hostile_programs().spd_trie_fd(), hostile_programs().spd_entries_fd(), compile_spd(compiled), nullptr);
    pools_.v4_src = {"10.0.0.5", "10.0.1.5", "172.16.0.1"};
    pools_.v4_dst = {"10.1.2.3", "10.2.0.1", "198.51.100.7", "192.0.2.1"};
    pools_.v6_src = {"2001:db8:aa::1", "2001:db8:ab::1"};
    pools_.v6_dst = {"2001:db8:1::5", "2001:db8:2::5", "2001:db9::1"};
  }

  static Target target(bool worker_xsk) {
    world_.worker_xsk = worker_xsk;
    return Target{"ov2_tx", hostile_programs().tx_prog_fd(), [] { return hostile_programs().tx_counters(); },
                  kTxCounterNames, [](const Bytes& f) { return expect_tx(f, world_); }};
  }
  static Generator generator(uint64_t seed) {
    return [seed](uint64_t i) { return generate_tx_case(case_seed(seed, i), pools_, ports_); };
  }

  static std::vector<std::pair<std::string, Bytes>> reference_frames() {
    std::vector<std::pair<std::string, Bytes>> out;
    for (const std::vector<uint16_t>& tpids :
         std::vector<std::vector<uint16_t>>{{}, {kEth8021Q}, {kEth8021AD, kEth8021Q}}) {
      const std::string tag = std::to_string(tpids.size()) + " tags";
      IpSpec s{.family = 4, .tpids = tpids, .src = "10.0.0.5", .dst = "10.1.2.3"};
      s.upper = {kProtoTcp, concat({be16_bytes(999), be16_bytes(443), Bytes(16, 0)}), false};
      out.emplace_back("tcp-v4 " + tag, build_ip(s).frame);
      s.upper = {kProtoUdp, udp_datagram(1500, 53, Bytes(8, 1)), true};
      s.dst = "10.2.0.1";
      out.emplace_back("udp-v4 " + tag, build_ip(s).frame);
      s.upper = {kProtoSctp, concat({be16_bytes(5), be16_bytes(3868), Bytes(8, 0)}), false};
      s.dst = "198.51.100.7";
      out.emplace_back("sctp-v4 " + tag, build_ip(s).frame);
      IpSpec v6{.family = 6, .tpids = tpids, .src = "2001:db8:aa::1", .dst = "2001:db8:1::5"};
      v6.v6_ext = {ExtHeader{.type = 0}, ExtHeader{.type = 60, .len_units = 1}};
      v6.upper = {kProtoUdp, udp_datagram(1, 4500, Bytes(8, 1)), true};
      out.emplace_back("udp-v6-ext " + tag, build_ip(v6).frame);
      v6.v6_ext.clear();
      v6.upper = {kProtoIcmpv6, concat({Bytes{135, 0}, Bytes(22, 0)}), false};
      out.emplace_back("nd-v6 " + tag, build_ip(v6).frame);
      v6.upper = {kProtoIcmpv6, concat({Bytes{128, 0}, Bytes(10, 0)}), false};
      out.emplace_back("echo-v6 " + tag, build_ip(v6).frame);
    }
    return out;
  }

  static inline TxWorld world_;
  static inline Pools pools_;
  static inline const std::vector<uint16_t> ports_ = {443, 1500, 4500, 4550, 53, 1000, 2000, 2001, 3868};
};

TEST_F(HostileTxTest, EveryTruncationOfEveryReferenceFrameMatchesTheReference) {
  uint64_t total = 0;
  const Generator gen = truncations_of(reference_frames(), &total);
  expect_clean("ov2_tx truncations, no worker XSK", run_cases(target(false), 0, total, gen));
  XskEnvironment xsk(hostile_programs().tx_xsks_map_fd());
  const Report with = run_cases(target(true), 0, total, gen);
  expect_clean("ov2_tx truncations, worker XSK", with);
  expect_outcomes_covered(with, {"PROTECT", "BYPASS", "NOT_IP", "MALFORMED", "refused"});
}

TEST_F(HostileTxTest, GeneratedHostileFramesWithAWorkerXskMatchTheReference) {
  XskEnvironment xsk(hostile_programs().tx_xsks_map_fd());
  const uint64_t seed = run_seed(0x7e57ab1e0ddba11ULL);
  const Report rep = run_cases(target(true), seed, scaled(400000), generator(seed));
  expect_clean("ov2_tx generated, worker XSK, " + seed_text(seed), rep);
  expect_outcomes_covered(rep, {"PROTECT", "BYPASS", "DISCARD", "NO_POLICY", "NOT_IP", "MALFORMED"});
}

TEST_F(HostileTxTest, GeneratedHostileFramesWithoutAWorkerXskMatchTheReference) {
  const uint64_t seed = run_seed(0x5ca1ab1ec0ffee00ULL);
  const Report rep = run_cases(target(false), seed, scaled(100000), generator(seed));
  expect_clean("ov2_tx generated, no worker XSK, " + seed_text(seed), rep);
  expect_outcomes_covered(rep, {"NO_WORKER", "DISCARD", "NO_POLICY", "MALFORMED"});
}

// Found by the generator: ov2_tx read the ICMPv6 type of a packet too short
// to hold an ICMPv6 header from the Ethernet padding behind it, so the same
// IP packet was dropped as neighbour discovery with padding and classified by
// the SPD without.  The IP packet alone decides now.
TEST_F(HostileTxTest, NeighbourDiscoveryIsDecidedByTheIpPacketNotByEthernetPadding) {
  XskEnvironment xsk(hostile_programs().tx_xsks_map_fd());
  const Target t = target(true);
  IpSpec s{.family = 6, .src = "2001:db8:aa::1", .dst = "2001:db8:1::5"};
  s.upper = {kProtoIcmpv6, {135, 0, 0, 0}, false};  // 4 of the 8 ICMPv6 header bytes
  const Bytes short_icmp = build_ip(s).frame;
  Bytes padded = short_icmp;
  padded.resize(short_icmp.size() + 20, 0);
  for (const Bytes& f : {short_icmp, padded}) {
    ASSERT_EQ(t.expect(f).counter, OV2_TX_BYPASS);  // policy 10: ICMPv6 to 2001:db8:1::5 bypasses
    const XdpRun r = run_xdp(t.prog_fd, f);
    EXPECT_EQ(r.action, XDP_REDIRECT) << hex(f);
    EXPECT_EQ(r.meta, tx_meta_bytes(0, 0)) << hex(f);
  }
  s.upper = {kProtoIcmpv6, concat({Bytes{135, 0}, Bytes(22, 0)}), false};  // a whole neighbour solicitation
  Bytes solicitation = build_ip(s).frame;
  solicitation.resize(solicitation.size() + 20, 0);
  ASSERT_EQ(t.expect(solicitation).counter, OV2_TX_NOT_IP);
  EXPECT_EQ(run_xdp(t.prog_fd, solicitation).action, XDP_DROP);
}

// ---------------------------------------------------------------------------
// ov2_deliver
// ---------------------------------------------------------------------------

Target deliver_target() {
  const uint64_t cookie = hostile_programs().cookie();
  return Target{"ov2_deliver", hostile_programs().deliver_prog_fd(),
                [] { return hostile_programs().deliver_counters(); }, kDeliverCounterNames,
                [cookie](const Bytes& f) { return expect_deliver(f, cookie); }};
}

TEST(HostileDeliverTest, EveryTruncationOfAValidShimFrameMatchesTheReference) {
  const uint64_t cookie = hostile_programs().cookie();
  std::vector<std::pair<std::string, Bytes>> frames;
  for (uint16_t inner : {kEthIpv4, kEthIpv6}) {
    const Bytes packet = inner == kEthIpv4
                             ? FrameBuilder().ipv4("10.1.0.1", "10.2.0.1", kProtoUdp).udp(1, 2).zeros(8).build()
                             : FrameBuilder().ipv6("2001:db8::1", "2001:db8::2", kProtoUdp).udp(1, 2).zeros(8).build();
    frames.emplace_back(inner == kEthIpv4 ? "shim-v4" : "shim-v6",
                        FrameBuilder()
                            .ethernet(OV2_SHIM_ETHERTYPE)
                            .shim(cookie, 0x1234, ov2_rx_make(0, 1, 0, CRYPTO_SUCCESS), inner)
                            .payload(packet)
                            .build());
  }
  uint64_t total = 0;
  const Generator gen = truncations_of(frames, &total);
  const Report rep = run_cases(deliver_target(), 0, total, gen);
  expect_clean("ov2_deliver truncations", rep);
  expect_outcomes_covered(rep, {"ACCEPTED", "MALFORMED", "refused"});
}

TEST(HostileDeliverTest, GeneratedHostileShimsMatchTheReference) {
  const uint64_t seed = run_seed(0xdec0de5eed5eed00ULL);
  const uint64_t cookie = hostile_programs().cookie();
  const Report rep = run_cases(deliver_target(), seed, scaled(300000), [seed, cookie](uint64_t i) {
    return generate_deliver_case(case_seed(seed, i), cookie);
  });
  expect_clean("ov2_deliver generated, " + seed_text(seed), rep);
  expect_outcomes_covered(rep, {"ACCEPTED", "BAD_COOKIE", "NOT_SHIM", "MALFORMED"});
  expect_kind_only(rep, "wrong-cookie", "BAD_COOKIE");
  expect_kind_only(rep, "shim-in-vlan", "NOT_SHIM");
  expect_kind_only(rep, "valid-shim", "ACCEPTED");
}

}  // namespace
}  // namespace ov2::test::hostile
