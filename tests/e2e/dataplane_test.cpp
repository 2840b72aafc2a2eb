// The data path end to end between two hosts (network namespaces), with the
// real BPF programs, offload device, AF_XDP workers and ESP engine, and no
// daemon: SAs and policies are installed directly.  Traffic is real (ping,
// a TCP transfer checked end to end); the wire is captured in the middle and checked independently with
// tshark (ESP only, every ICV good with the SA keys).
#include "dataplane/dataplane.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/utsname.h>

#include <algorithm>
#include <array>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <tuple>

#include "common/error.h"
#include "dataplane/event_reader.h"
#include "dataplane/spd_compiler.h"
#include "dataplane/umem.h"
#include "dataplane/xsk_port.h"
#include "e2e/dataplane_harness.h"
#include "esp/esp.h"

namespace ov2 {
namespace {

using e2e::Child;
using e2e::InNetns;
using e2e::must;
using e2e::Netns;
using e2e::sh;
using e2e::sh_out;

std::string hex(std::span<const uint8_t> b) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (uint8_t c : b) {
    s += d[c >> 4];
    s += d[c & 15];
  }
  return s;
}

SecureBytes random_key(size_t n) {
  std::vector<uint8_t> b(n);
  RAND_bytes(b.data(), static_cast<int>(n));
  SecureBytes k(b);
  OPENSSL_cleanse(b.data(), b.size());
  return k;
}

constexpr uint64_t handle_of(uint64_t seq, uint64_t slot) { return (seq << 24) | slot; }

struct Endpoint {
  std::unique_ptr<Netns> ns;
  std::unique_ptr<Dataplane> dp;
  std::string wire_ip, wire_ip6, inner_ip, inner_net, peer_inner_net;
  std::string inner_ip6, inner_net6, peer_inner_net6;
};

// One direction's SA pair as both hosts see it.
struct SaPair {
  SaSpec out;  // on the sender
  SaSpec in;   // on the receiver
  uint64_t out_handle;
  uint64_t in_handle;
};

std::string dump(const Dataplane& dp);

class DataplaneE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, BPF, AF_XDP)";
    e2e::remove_stale_namespaces();
    const std::string prefix = "ov2t" + std::to_string(getpid());
    mid_ = std::make_unique<Netns>(prefix + "m");
    a_.ns = std::make_unique<Netns>(prefix + "a");
    b_.ns = std::make_unique<Netns>(prefix + "b");
    a_.wire_ip = "192.0.2.1";
    b_.wire_ip = "192.0.2.2";
    a_.wire_ip6 = "fd00:2::1";
    b_.wire_ip6 = "fd00:2::2";
    a_.inner_ip = "10.1.0.1";
    b_.inner_ip = "10.2.0.1";
    a_.inner_ip6 = "fd00:11::1";
    b_.inner_ip6 = "fd00:12::1";
    a_.inner_net6 = b_.peer_inner_net6 = "fd00:11::/64";
    b_.inner_net6 = a_.peer_inner_net6 = "fd00:12::/64";
    a_.inner_net = b_.peer_inner_net = "10.1.0.0/24";
    b_.inner_net = a_.peer_inner_net = "10.2.0.0/24";
    const std::string m = mid_->name();
    must(mid_->exec("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"));
    must("ip -n " + m + " link add br0 type bridge && ip -n " + m + " link set br0 up");
    for (auto [ep, port] :
         {std::pair<Endpoint*, const char*>{&a_, "mida"}, std::pair<Endpoint*, const char*>{&b_, "midb"}}) {
      const std::string n = ep->ns->name();
      const std::string q = " numtxqueues " + std::to_string(queues()) + " numrxqueues " + std::to_string(queues());
      must("ip link add wire" + q + " netns " + n + " type veth peer name " + std::string(port) + q + " netns " + m);
      must("ip -n " + m + " link set dev " + port + " master br0 up");
      must("ip -n " + n + " link set lo up");
      must("ip -n " + n + " addr add " + ep->wire_ip + "/24 dev wire");
      must("ip -n " + n + " addr add " + ep->wire_ip6 + "/64 dev wire nodad");
      must("ip -n " + n + " addr add " + ep->inner_ip + "/32 dev lo");
      must("ip -n " + n + " addr add " + ep->inner_ip6 + "/128 dev lo");
      if (wire_mtu_ != 1500) {
        must("ip -n " + n + " link set wire mtu " + std::to_string(wire_mtu_));
        must("ip -n " + m + " link set " + port + " mtu " + std::to_string(wire_mtu_));
      }
      must("ip -n " + n + " link set wire up");
      // With several queues, b's RX queue must follow a's TX queue, but the
      // bridge picks the TX queue of the port it forwards to afresh
      // (netdev_pick_tx): a frame a sent on queue q >= 1 still carries
      // queue_mapping q, which skb_tx_hash reads as "received on queue q-1";
      // one sent on queue 0 carries nothing and is spread by the flow hash of
      // its outer header -- addresses and SPI, keyed by a random secret drawn
      // at boot.  So one SA's frames reached both of b's queues only on the
      // boots where that hash picked queue 1 (a coin toss per SA and per boot).
      // XPS by CPU instead: the bridge forwards on the CPU that sent the frame
      // (veth_xmit -> netif_rx, no RPS), which is the CPU a's pinned worker q
      // runs on, so the frame leaves on queue q towards b's queue q.
      if (queues() > 1) steer_tx_queues_by_cpu(*mid_, port);
    }
  }

  void TearDown() override {
    capture_.reset();
    // Each data plane is stopped inside its own namespace (detach by ifindex).
    for (Endpoint* ep : {&a_, &b_}) {
      if (ep->dp && ep->ns) {
        InNetns in(*ep->ns);
        ep->dp.reset();
      }
    }
    b_.ns.reset();
    a_.ns.reset();
    mid_.reset();
  }

  // Queues of the wire veths and workers per host; CPUs to pin them to.
  virtual uint32_t queues() const { return 1; }
  virtual std::vector<int> cpus() const { return {}; }
  // The SAs' anti-replay window (make_pair).
  virtual uint32_t replay_window() const { return 64; }

  // XPS: whatever sends through `dev` (in `ns`) on CPU cpus()[q] uses its TX
  // queue q, and a veth delivers that on the peer's RX queue q.
  void steer_tx_queues_by_cpu(const Netns& ns, const std::string& dev) const {
    const std::vector<int> c = cpus();
    for (uint32_t q = 0; q < queues() && q < c.size(); ++q) {
      std::ostringstream mask;
      mask << std::hex << (uint64_t{1} << c[q]);
      must(ns.exec("sh -c 'echo " + mask.str() + " > /sys/class/net/" + dev + "/queues/tx-" + std::to_string(q) +
                   "/xps_cpus'"));
    }
  }

  void start_dataplanes() {
    for (Endpoint* ep : {&a_, &b_}) {
      InNetns in(*ep->ns);
      Dataplane::Options o;
      o.wire_ifname = "wire";
      o.umem_frames = 2048;
      o.ring_size = 512;
      o.queues = queues();
      o.cpus = cpus();
      ep->dp = std::make_unique<Dataplane>(o);
      ep->dp->start();
      // The host's traffic into ov2 takes the TX queue of the CPU that sends
      // it, so a process pinned to cpus()[q] goes through worker q.
      if (queues() > 1) steer_tx_queues_by_cpu(*ep->ns, o.offload_dev);
      // Routes into ov2 carry the route MTU (offload_device.h), unless the
      // test leaves it to path MTU discovery through the tunnel.
      const std::string mtu = route_mtu_ ? " mtu " + std::to_string(ep->dp->device().route_mtu()) : "";
      must("ip -n " + ep->ns->name() + " route add " + ep->peer_inner_net + " dev ov2 src " + ep->inner_ip + mtu);
      must("ip -n " + ep->ns->name() + " route add " + ep->peer_inner_net6 + " dev ov2 src " + ep->inner_ip6 + mtu);
    }
  }

  // A tunnel (or transport) SA pair from `src` to `dst` (outer addresses).
  SaPair make_pair(const std::string& src, const std::string& dst, uint32_t spi, uint64_t out_slot, uint64_t in_slot,
                   Mode mode = Mode::Tunnel) {
    SaPair p;
    SaSpec s;
    s.mode = mode;
    s.src = IpAddr::parse(src);
    s.dst = IpAddr::parse(dst);
    s.spi = spi;
    s.enc = EncAlg::AesGcm128;
    s.auth = AuthAlg::None;
    s.enc_key = random_key(20);
    s.replay_window = replay_window();
    p.out = s;
    p.out.dir = Direction::Out;
    p.in = s;
    p.in.dir = Direction::In;
    p.out_handle = handle_of(7, out_slot);
    p.in_handle = handle_of(7, in_slot);
    return p;
  }

  void install(Endpoint& sender, Endpoint& receiver, const SaPair& p) {
    sender.dp->install_sa(p.out_handle, p.out);
    receiver.dp->install_sa(p.in_handle, p.in);
    tshark_sas_.push_back(p.out);
  }

  // PROTECT everything from the sender's inner prefix to `dst_prefix` with `handle`.
  // `tunnel_handle`: for a transport-in-tunnel bundle, the tunnel SA (`handle` is then the transport SA).
  static void protect(Endpoint& ep, const std::string& src_prefix, const std::string& dst_prefix, uint64_t handle,
                      std::vector<CompiledPolicy>* policies, uint64_t tunnel_handle = 0) {
    CompiledPolicy cp{};
    cp.id = static_cast<uint32_t>(policies->size() + 1);
    cp.spec.dir = Direction::Out;
    cp.spec.src = IpPrefix::parse(src_prefix);
    cp.spec.dst = IpPrefix::parse(dst_prefix);
    cp.spec.action = PolicyAction::Protect;
    cp.spec.sa_handle = handle;
    cp.offload_handle = handle;
    cp.tunnel_handle = tunnel_handle;
    policies->push_back(cp);
    CompiledSpd spd = compile_spd(*policies);
    load_spd(ep.dp->programs().spd_trie_fd(), ep.dp->programs().spd_entries_fd(), spd, nullptr);
  }

  // IPv4 tunnel 10.1.0.0/24 <-> 10.2.0.0/24 over the given outer addresses.
  // `ab_hard_packets`: hard packet lifetime of the a->b SA on b (0: none).
  // `udp_encap`: RFC 3948 UDP encapsulation (port 4500) on both SAs.
  void setup_tunnel(bool outer_v6, uint64_t ab_hard_packets = 0, bool udp_encap = false) {
    start_dataplanes();
    const std::string asrc = outer_v6 ? a_.wire_ip6 : a_.wire_ip, bsrc = outer_v6 ? b_.wire_ip6 : b_.wire_ip;
    ab_ = make_pair(asrc, bsrc, 0x1001, 1, 2);
    ab_.in.life_packets.hard = ab_hard_packets;
    ba_ = make_pair(bsrc, asrc, 0x2002, 3, 4);
    for (SaPair* p : {&ab_, &ba_}) p->out.udp_encap = p->in.udp_encap = udp_encap;
    install(a_, b_, ab_);
    install(b_, a_, ba_);
    std::vector<CompiledPolicy> pa, pb;
    protect(a_, a_.inner_net, b_.inner_net, ab_.out_handle, &pa);
    protect(a_, a_.inner_net6, b_.inner_net6, ab_.out_handle, &pa);
    protect(b_, b_.inner_net, a_.inner_net, ba_.out_handle, &pb);
    protect(b_, b_.inner_net6, a_.inner_net6, ba_.out_handle, &pb);
  }

  // Transport SAs between the wire addresses (IKE's UDP 500 bypassed), routes
  // into ov2 with `route_mtu` (0: none; -1: the offload device's route MTU).
  void setup_transport(bool v6, int route_mtu);

  // A transport-in-tunnel bundle each way: transport SAs between the inner
  // addresses (slots a->b out/in, b->a out/in) inside the tunnel SAs ab_ /
  // ba_ between the wire addresses, and a PROTECT policy for each host's
  // inner address.  Returns the transport pairs (a->b, b->a).
  std::pair<SaPair, SaPair> setup_bundle(std::array<uint64_t, 4> transport_slots) {
    SaPair ab_tr = make_pair(a_.inner_ip, b_.inner_ip, 0x6101, transport_slots[0], transport_slots[1], Mode::Transport);
    SaPair ba_tr = make_pair(b_.inner_ip, a_.inner_ip, 0x6202, transport_slots[2], transport_slots[3], Mode::Transport);
    ab_ = make_pair(a_.wire_ip, b_.wire_ip, 0x6001, 1, 2);
    ba_ = make_pair(b_.wire_ip, a_.wire_ip, 0x6002, 3, 4);
    ab_.in.inner_handle = ab_tr.in_handle;
    ba_.in.inner_handle = ba_tr.in_handle;
    install(a_, b_, ab_tr);  // the inner SAs first: the tunnel SAs name them
    install(b_, a_, ba_tr);
    install(a_, b_, ab_);
    install(b_, a_, ba_);
    std::vector<CompiledPolicy> pa, pb;
    protect(a_, a_.inner_ip + "/32", b_.inner_ip + "/32", ab_tr.out_handle, &pa, ab_.out_handle);
    protect(b_, b_.inner_ip + "/32", a_.inner_ip + "/32", ba_tr.out_handle, &pb, ba_.out_handle);
    return {ab_tr, ba_tr};
  }
  void run_transport(bool v6);

  void start_capture() {
    pcap_ = tmp_.file("wire.pcap");
    capture_ = std::make_unique<Child>(mid_->exec("tcpdump -Z root --immediate-mode -B 16384 -i br0 -U -n -w " + pcap_),
                                       tmp_.file("tcpdump.log"));
    ASSERT_TRUE(e2e::wait_for(
        [&] { return e2e::read_file(tmp_.file("tcpdump.log")).find("listening") != std::string::npos; }, 5000))
        << "tcpdump did not start";
  }

  // Packets the capture lost in the kernel (tcpdump's own report).
  uint64_t capture_drops() {
    const std::string log = e2e::read_file(tmp_.file("tcpdump.log"));
    size_t at = log.find(" packets dropped by kernel");
    if (at == std::string::npos) return UINT64_MAX;
    size_t start = log.rfind('\n', at);
    return std::stoull(log.substr(start == std::string::npos ? 0 : start + 1, at));
  }

  void stop_capture() {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    capture_->stop();
  }

  // Sends `bytes` over TCP from a (bound to `src`) to b's `dst`; true when b
  // received exactly those bytes (count and SHA-256, acknowledged back).
  // `cpu` >= 0: the client runs pinned to that CPU.
  bool tcp_transfer(const std::string& src, const std::string& dst, size_t bytes, int cpu = -1) {
    const std::string tool = std::string("/usr/bin/python3 ") + OV2_SOURCE_DIR + "/tests/e2e/dataplane_tcp.py";
    Child server(b_.ns->exec(tool + " server " + dst + " 5201"), tmp_.file("tcp-server.log"));
    if (!e2e::wait_for([&] { return sh(b_.ns->exec("ss -ltn | grep -q ':5201 '")) == 0; }, 5000)) return false;
    const std::string pin = cpu >= 0 ? "taskset -c " + std::to_string(cpu) + " " : "";
    return sh(a_.ns->exec("timeout 60 " + pin + tool + " client " + src + " " + dst + " 5201 " + std::to_string(bytes) +
                          " >" + tmp_.file("tcp-client.log") + " 2>&1")) == 0;
  }

  // Pings until one answer comes back: next hops resolve on the first packets.
  bool warm_up(Endpoint& from, const std::string& dst) {
    for (int i = 0; i < 10; ++i)
      if (sh(from.ns->exec("ping -c 1 -W 1 -q " + dst + " >/dev/null 2>&1")) == 0) return true;
    std::cerr << "host a: " << dump(*a_.dp) << "\nhost b: " << dump(*b_.dp) << "\n";
    return false;
  }

  // tshark's `fields` (" -e a -e b ...", `n` of them) for the packets of the
  // capture matching `filter`, one row each, with ESP opened by the SAs.
  std::vector<std::vector<std::string>> tshark_fields(const std::string& filter, const std::string& fields, size_t n) {
    // The SA table goes to tshark in a private config file, never on a command line.
    const std::string conf = tmp_.file("wireshark");
    mkdir(conf.c_str(), 0700);
    {
      std::ofstream f(conf + "/esp_sa", std::ios::trunc);
      for (const SaSpec& s : tshark_sas_) {
        f << "\"" << (s.dst.family == Family::V4 ? "IPv4" : "IPv6") << "\",\"" << s.src.to_string() << "\",\""
          << s.dst.to_string() << "\",\"0x" << std::hex << s.spi << std::dec
          << "\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x" << hex(s.enc_key.span()) << "\",\"NULL\",\"\"\n";
      }
    }
    chmod((conf + "/esp_sa").c_str(), 0600);
    // occurrence=f picks the outer header's fields (a decrypted inner header
    // comes later in the frame).
    std::string out = sh_out("WIRESHARK_CONFIG_DIR=" + conf + " tshark -n -r " + pcap_ +
                             " -o esp.enable_encryption_decode:TRUE -o esp.enable_authentication_check:TRUE"
                             " -Y '" +
                             filter + "' -T fields -E separator=, -E occurrence=f" + fields + " 2>/dev/null");
    tshark_raw_ = out;
    std::vector<std::vector<std::string>> rows;
    std::istringstream ss(out);
    std::string line;
    while (std::getline(ss, line)) {
      std::vector<std::string> f;
      std::string c;
      std::istringstream ls(line);
      while (std::getline(ls, c, ',')) f.push_back(c);
      f.resize(n);
      rows.push_back(std::move(f));
    }
    return rows;
  }

  // tshark's view of the capture, one line per IP packet:
  // outer src, dst, protocol, esp.spi, esp.icv_good, icmpv6.type.
  std::vector<std::vector<std::string>> tshark_packets() {
    std::vector<std::vector<std::string>> rows;
    // eth.type says the outer family.
    for (const auto& f : tshark_fields("ip or ipv6",
                                       " -e eth.type -e ip.src -e ip.dst -e ip.proto -e ipv6.src -e ipv6.dst"
                                       " -e ipv6.nxt -e esp.spi -e esp.icv_good -e icmpv6.type -e frame.len",
                                       11)) {
      const bool v6 = f[0] == "0x86dd";
      // -> src dst proto spi icv_good icmpv6_type
      rows.push_back({v6 ? f[4] : f[1], v6 ? f[5] : f[2], v6 ? f[6] : f[3], f[7], f[8], f[9], f[10]});
    }
    return rows;
  }

  // Counts over the capture: ESP packets by SPI with a good ICV, and anything
  // between the wire addresses that is not ESP.
  struct WireSummary {
    std::map<uint32_t, uint64_t> esp_good;  // by SPI
    uint64_t esp_bad_or_unchecked = 0;
    uint64_t neighbour_discovery = 0;  // ICMPv6 133..137 between the wire addresses
    uint64_t max_frame = 0;            // largest ESP frame (bytes, with Ethernet)
    uint64_t udp_encapsulated = 0;     // ESP in UDP (RFC 3948)
    std::vector<std::string> not_esp;  // lines
  };
  WireSummary summarize() {
    WireSummary w;
    for (const auto& r : tshark_packets()) {
      // Fields present: src dst proto [spi icv_good]; IPv6 extension/ND rows vary.
      std::string line;
      for (const auto& c : r) line += c + " ";
      // Only our hosts' traffic: the wire also carries IPv6 link-local ND/MLD.
      const std::string& src = r[0];
      if (src.rfind("192.0.2.", 0) != 0 && src.rfind("fd00:2::", 0) != 0 && src.rfind("10.", 0) != 0) continue;
      if (r[2] == "50" || (r[2] == "17" && !r[3].empty())) {  // ESP, or UDP-encapsulated ESP
        if (r[2] == "17") w.udp_encapsulated++;
        if (!r[6].empty()) w.max_frame = std::max<uint64_t>(w.max_frame, std::stoul(r[6]));
        if (r[4] == "True" || r[4] == "1")
          w.esp_good[std::stoul(r[3], nullptr, 16)]++;
        else
          w.esp_bad_or_unchecked++;
      } else if (r[2] == "58" && !r[5].empty() && std::stoi(r[5]) >= 133 && std::stoi(r[5]) <= 137) {
        w.neighbour_discovery++;  // the stack's own, in clear by design
      } else {
        w.not_esp.push_back(line);
      }
    }
    return w;
  }

  e2e::TempDir tmp_;
  std::unique_ptr<Netns> mid_;
  Endpoint a_, b_;
  SaPair ab_, ba_;
  std::vector<SaSpec> tshark_sas_;
  std::unique_ptr<Child> capture_;
  std::string pcap_;
  std::string tshark_raw_;    // for failure messages
  bool route_mtu_ = true;     // false: routes into ov2 without `mtu` (path MTU discovery)
  uint32_t wire_mtu_ = 1500;  // MTU of the wire veths (set before SetUp)
};

// Every non-zero counter, for failure messages.
std::string dump(const Dataplane& dp) {
  DataplaneCounters c = dp.counters();
  std::ostringstream o;
  for (size_t i = 0; i < c.worker.size(); ++i)
    if (c.worker[i]) o << worker_counter_name(static_cast<WorkerCounter>(i)) << "=" << c.worker[i] << " ";
  auto list = [&](const char* name, const std::vector<uint64_t>& v) {
    o << name << "[";
    for (uint64_t x : v) o << x << " ";
    o << "] ";
  };
  list("wire", c.wire);
  list("tx", c.tx);
  list("deliver", c.deliver);
  list("verdict", c.verdict);
  list("status", c.verdict_status);
  o << "resolved=" << c.neighbour_resolutions;
  for (size_t q = 0; q < c.wire_sockets.size(); ++q)
    o << " xsk" << q << "{wire rx_dropped=" << c.wire_sockets[q].rx_dropped
      << " nic rx_dropped=" << c.nic_sockets[q].rx_dropped << "}";
  return o.str();
}

uint64_t wc(const Dataplane& dp, WorkerCounter c) { return dp.counters().worker_count(c); }

// Sends raw frames out of `ifname` in namespace `ns`.
void inject(const Netns& ns, const std::string& ifname, const std::vector<std::string>& frames) {
  InNetns in(ns);
  int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  ASSERT_GE(s, 0);
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  sll.sll_halen = 6;
  ASSERT_NE(sll.sll_ifindex, 0);
  for (const auto& f : frames)
    ASSERT_EQ(sendto(s, f.data(), f.size(), 0, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)),
              static_cast<ssize_t>(f.size()));
  close(s);
}

// Sends one raw frame out of `ifname` in namespace `ns` from a thread pinned
// to `cpu`, bypassing the qdisc: the packet socket then picks the TX queue
// cpu % queues (packet_pick_tx_queue), and a veth delivers on the peer's RX
// queue of that number -- a way to steer a frame to one queue of the receiver.
void inject_from_cpu(const Netns& ns, const std::string& ifname, const std::string& frame, int cpu) {
  std::string error;
  std::thread t([&] {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0) {
      error = "cannot pin the injecting thread";
      return;
    }
    InNetns in(ns);
    int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (s < 0) {
      error = "no packet socket";
      return;
    }
    int one = 1;
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
    sll.sll_halen = 6;
    if (setsockopt(s, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) != 0)
      error = "PACKET_QDISC_BYPASS refused";
    else if (sendto(s, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) !=
             static_cast<ssize_t>(frame.size()))
      error = "sendto failed";
    close(s);
  });
  t.join();
  ASSERT_TRUE(error.empty()) << error;
}

// Frames of the capture that are ESP with `spi` (IPv4 outer, no options).
std::vector<std::string> esp_frames(const std::string& pcap, uint32_t spi) {
  std::vector<std::string> out;
  for (const auto& f : e2e::pcap_frames(pcap)) {
    if (f.size() < 14 + 20 + 8 || static_cast<uint8_t>(f[12]) != 0x08 || f[13] != 0x00) continue;
    if (static_cast<uint8_t>(f[14 + 9]) != 50) continue;
    uint32_t s;
    std::memcpy(&s, f.data() + 14 + 20, 4);
    if (ntohl(s) == spi) out.push_back(f);
  }
  return out;
}

TEST_F(DataplaneE2E, Ipv4TunnelAesGcm128PingAndTcpCrossTheWireOnlyAsEspWithGoodIcvs) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip)) << "no ping answer through the tunnel";
  start_capture();
  const DataplaneCounters a0 = a_.dp->counters(), b0 = b_.dp->counters();
  EXPECT_EQ(sh(a_.ns->exec("ping -c 5 -i 0.2 -W 2 -q " + b_.inner_ip + " >/dev/null")), 0);
  EXPECT_TRUE(tcp_transfer(a_.inner_ip, b_.inner_ip, 1 << 20)) << e2e::read_file(tmp_.file("tcp-client.log"));
  stop_capture();
  const DataplaneCounters a1 = a_.dp->counters(), b1 = b_.dp->counters();

  WireSummary w = summarize();
  const uint64_t ab = w.esp_good[ab_.out.spi], ba = w.esp_good[ba_.out.spi];
  EXPECT_GT(a1.worker_count(WorkerCounter::TxEncapsulated) - a0.worker_count(WorkerCounter::TxEncapsulated),
            (1u << 20) / 1400)
      << "1 MB of TCP plus pings needs more packets; a: " << dump(*a_.dp);
  EXPECT_GT(ab, 0u);
  EXPECT_LE(w.max_frame, 14u + 1500u) << "nothing larger than the wire MTU";
  EXPECT_GT(ba, 5u);
  EXPECT_EQ(w.esp_bad_or_unchecked, 0u);
  for (const auto& l : w.not_esp) ADD_FAILURE() << "IP packet on the wire that is not ESP: " << l;

  auto d = [](const DataplaneCounters& x, const DataplaneCounters& y, WorkerCounter c) {
    return y.worker_count(c) - x.worker_count(c);
  };
  // The sender's worker encapsulated exactly what the receiver's opened and its
  // verdict accepted, in both directions.
  EXPECT_EQ(d(a0, a1, WorkerCounter::TxEncapsulated), d(b0, b1, WorkerCounter::RxDecapsulated));
  EXPECT_EQ(d(b0, b1, WorkerCounter::RxDecapsulated), b1.verdict[OV2_VERDICT_ACCEPT] - b0.verdict[OV2_VERDICT_ACCEPT]);
  EXPECT_EQ(d(b0, b1, WorkerCounter::TxEncapsulated), d(a0, a1, WorkerCounter::RxDecapsulated));
  EXPECT_EQ(d(a0, a1, WorkerCounter::RxDecapsulated), a1.verdict[OV2_VERDICT_ACCEPT] - a0.verdict[OV2_VERDICT_ACCEPT]);
  // And that is what crossed the wire: the capture saw all of it, except what
  // the capturing socket itself lost (tcpdump reports it; the 2-core test
  // machines drop a few percent at full TCP speed).
  const uint64_t lost = capture_drops();
  EXPECT_LE(ab, d(a0, a1, WorkerCounter::TxEncapsulated));
  EXPECT_LE(ba, d(b0, b1, WorkerCounter::TxEncapsulated));
  EXPECT_LE(d(a0, a1, WorkerCounter::TxEncapsulated) + d(b0, b1, WorkerCounter::TxEncapsulated) - ab - ba, lost)
      << e2e::read_file(tmp_.file("tcpdump.log"));
  EXPECT_EQ(d(b0, b1, WorkerCounter::RxCryptoFailed), 0u);
  EXPECT_EQ(b1.verdict[OV2_VERDICT_DROP_STATUS], 0u);
  EXPECT_EQ(b1.deliver[OV2_DELIVER_BAD_COOKIE], 0u);
  // The SA's own counters agree with the worker's.
  EXPECT_EQ(b_.dp->sa_counters(ab_.in_handle).packets, b1.worker_count(WorkerCounter::RxDecapsulated));
  EXPECT_GE(a_.dp->sa_counters(ab_.out_handle).packets, a1.worker_count(WorkerCounter::TxEncapsulated));
}

// A measurement, not a check (run with --gtest_also_run_disabled_tests): one
// TCP stream through the IPv4 AES-GCM-128 tunnel, both workers on this machine.
TEST_F(DataplaneE2E, DISABLED_MeasureOneTcpStreamThroughTheTunnel) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  const size_t bytes = 64u << 20;
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(tcp_transfer(a_.inner_ip, b_.inner_ip, bytes)) << e2e::read_file(tmp_.file("tcp-client.log"));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const DataplaneCounters a = a_.dp->counters();
  std::cout << "64 MiB in " << s << " s = " << (bytes * 8 / s / 1e6) << " Mbit/s; a: " << dump(*a_.dp) << "\n";
  EXPECT_EQ(a.worker_count(WorkerCounter::TxRingFull), 0u);
}

TEST_F(DataplaneE2E, ReplayedEspPacketIsDroppedAndCountedAsGenericError) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  start_capture();
  EXPECT_EQ(sh(a_.ns->exec("ping -c 3 -i 0.2 -W 2 -q " + b_.inner_ip + " >/dev/null")), 0);
  stop_capture();
  std::vector<std::string> frames = esp_frames(pcap_, ab_.out.spi);
  ASSERT_FALSE(frames.empty());
  const DataplaneCounters b0 = b_.dp->counters();
  const uint64_t replayed0 = b_.dp->sa_counters(ab_.in_handle).by_reason[static_cast<size_t>(esp::Reason::Replayed)];
  std::vector<uint64_t> noted;
  b_.dp->take_failed_sas(noted);  // whatever failed before
  noted.clear();
  inject(*mid_, "midb", {frames.back()});
  ASSERT_TRUE(e2e::wait_for(
      [&] { return wc(*b_.dp, WorkerCounter::RxCryptoFailed) > b0.worker_count(WorkerCounter::RxCryptoFailed); },
      3000));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const DataplaneCounters b1 = b_.dp->counters();
  EXPECT_EQ(b_.dp->sa_counters(ab_.in_handle).by_reason[static_cast<size_t>(esp::Reason::Replayed)], replayed0 + 1);
  // The worker noted the SA for the daemon's periodic check (Observability reads only noted SAs' counters).
  EXPECT_TRUE(b_.dp->take_failed_sas(noted));
  EXPECT_EQ(noted, std::vector<uint64_t>{ab_.in_handle});
  EXPECT_EQ(b1.verdict_status[CRYPTO_GENERIC_ERROR] - b0.verdict_status[CRYPTO_GENERIC_ERROR], 1u);
  EXPECT_EQ(b1.verdict[OV2_VERDICT_DROP_STATUS] - b0.verdict[OV2_VERDICT_DROP_STATUS], 1u);
  EXPECT_EQ(b1.verdict[OV2_VERDICT_ACCEPT], b0.verdict[OV2_VERDICT_ACCEPT]);
}

TEST_F(DataplaneE2E, TamperedEspPacketIsDroppedAndCountedAsTunnelEspAuthFailed) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  start_capture();
  EXPECT_EQ(sh(a_.ns->exec("ping -c 2 -i 0.2 -W 2 -q " + b_.inner_ip + " >/dev/null")), 0);
  stop_capture();
  std::vector<std::string> frames = esp_frames(pcap_, ab_.out.spi);
  ASSERT_FALSE(frames.empty());
  std::string f = frames.back();
  // A sequence number the window has not seen (so the replay check passes and
  // the ICV is what fails), and one flipped ciphertext bit.
  const uint32_t seq = htonl(1000000);
  std::memcpy(f.data() + 14 + 20 + 4, &seq, 4);
  f[14 + 20 + 8 + 8 + 4] ^= 0x01;
  const DataplaneCounters b0 = b_.dp->counters();
  inject(*mid_, "midb", {f});
  ASSERT_TRUE(e2e::wait_for(
      [&] { return wc(*b_.dp, WorkerCounter::RxCryptoFailed) > b0.worker_count(WorkerCounter::RxCryptoFailed); },
      3000));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const DataplaneCounters b1 = b_.dp->counters();
  EXPECT_EQ(b_.dp->sa_counters(ab_.in_handle).by_reason[static_cast<size_t>(esp::Reason::AuthFailed)], 1u);
  EXPECT_EQ(b1.verdict_status[CRYPTO_TUNNEL_ESP_AUTH_FAILED] - b0.verdict_status[CRYPTO_TUNNEL_ESP_AUTH_FAILED], 1u);
  EXPECT_EQ(b1.verdict[OV2_VERDICT_ACCEPT], b0.verdict[OV2_VERDICT_ACCEPT]);
  // The window did not move: the genuine next packet still gets through.
  EXPECT_EQ(sh(a_.ns->exec("ping -c 1 -W 2 -q " + b_.inner_ip + " >/dev/null")), 0);
}

TEST_F(DataplaneE2E, TrafficWithoutSaPassesUntouchedAndUnknownSpiGoesToTheStack) {
  setup_tunnel(false);
  start_capture();
  const DataplaneCounters b0 = b_.dp->counters();
  // Plain traffic between the wire addresses: no policy routes it into ov2.
  EXPECT_EQ(sh(a_.ns->exec("ping -c 3 -i 0.2 -W 2 -q " + b_.wire_ip + " >/dev/null")), 0);
  stop_capture();
  WireSummary w = summarize();
  size_t icmp = 0;
  for (const auto& l : w.not_esp)
    if (l.find(" 1 ") != std::string::npos) ++icmp;  // "src dst 1 ..."
  EXPECT_EQ(icmp, 6u) << "3 echo requests and 3 replies in clear; tshark saw:\n"
                      << tshark_raw_ << "\ntcpdump: " << e2e::read_file(tmp_.file("tcpdump.log")) << " pcap bytes "
                      << e2e::read_file(pcap_).size();
  const DataplaneCounters b1 = b_.dp->counters();
  EXPECT_GE(b1.wire[OV2_WIRE_PASS_NOT_ESP] - b0.wire[OV2_WIRE_PASS_NOT_ESP], 3u);
  EXPECT_EQ(b1.worker_count(WorkerCounter::RxPackets), b0.worker_count(WorkerCounter::RxPackets));

  // ESP with an SPI nobody installed: ov2_wire passes it to the stack; the worker never sees it.
  std::string frame(14 + 20 + 8 + 32, '\0');
  uint8_t* p = reinterpret_cast<uint8_t*>(frame.data());
  std::memset(p, 0xff, 6);  // broadcast: the bridge floods it to host b
  p[12] = 0x08;
  uint8_t* ip = p + 14;
  ip[0] = 0x45;
  uint16_t tot = htons(20 + 8 + 32);
  std::memcpy(ip + 2, &tot, 2);
  ip[8] = 64;
  ip[9] = 50;
  inet_pton(AF_INET, a_.wire_ip.c_str(), ip + 12);
  inet_pton(AF_INET, b_.wire_ip.c_str(), ip + 16);
  uint32_t spi = htonl(0xdead);
  std::memcpy(ip + 20, &spi, 4);
  inject(*mid_, "midb", {frame});
  EXPECT_TRUE(
      e2e::wait_for([&] { return b_.dp->counters().wire[OV2_WIRE_PASS_NO_SA] > b0.wire[OV2_WIRE_PASS_NO_SA]; }, 3000));
  EXPECT_EQ(b_.dp->counters().worker_count(WorkerCounter::RxPackets), b0.worker_count(WorkerCounter::RxPackets));
}

TEST_F(DataplaneE2E, ForgedShimFrameFromTheWireIsNeverAccepted) {
  setup_tunnel(false);
  const DataplaneCounters b0 = b_.dp->counters();
  // The worst case: the forger knows the cookie.  A shim on the wire is not IP,
  // so ov2_wire passes it to the wire's stack; it never reaches ov2.
  std::string frame(14 + OV2_SHIM_SIZE + 28, '\0');
  uint8_t* p = reinterpret_cast<uint8_t*>(frame.data());
  std::memset(p, 0xff, 6);
  p[12] = OV2_SHIM_ETHERTYPE >> 8;
  p[13] = OV2_SHIM_ETHERTYPE & 0xff;
  ov2_shim shim{};
  shim.cookie = b_.dp->programs().cookie();
  shim.sa_handle = ab_.in_handle;
  shim.rx_info = ov2_rx_make(0, 1, 0, CRYPTO_SUCCESS);
  shim.inner_proto_be = htons(0x0800);
  std::memcpy(p + 14, &shim, sizeof(shim));
  uint8_t* ip = p + 14 + OV2_SHIM_SIZE;
  ip[0] = 0x45;
  uint16_t tot = htons(28);
  std::memcpy(ip + 2, &tot, 2);
  ip[8] = 64;
  ip[9] = 17;
  inet_pton(AF_INET, a_.inner_ip.c_str(), ip + 12);
  inet_pton(AF_INET, b_.inner_ip.c_str(), ip + 16);
  inject(*mid_, "midb", {frame, frame, frame});
  EXPECT_TRUE(e2e::wait_for(
      [&] { return b_.dp->counters().wire[OV2_WIRE_PASS_NOT_IP] >= b0.wire[OV2_WIRE_PASS_NOT_IP] + 3; }, 3000));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const DataplaneCounters b1 = b_.dp->counters();
  EXPECT_EQ(b1.deliver[OV2_DELIVER_RX], b0.deliver[OV2_DELIVER_RX]);
  EXPECT_EQ(b1.verdict[OV2_VERDICT_ACCEPT], b0.verdict[OV2_VERDICT_ACCEPT]);
  EXPECT_EQ(b1.worker_count(WorkerCounter::RxPackets), b0.worker_count(WorkerCounter::RxPackets));
}

// RFC 4301 §5.2: a packet the right SA opened must still be allowed by the
// inbound SPD.  Host a seals, with the genuine a->b SA, pings from 10.1.0.1
// (inside b's inbound policy) and from 10.9.0.1 (outside it): b delivers the
// first, drops the second as policy-mismatch (worker and SA counters, CryptoDone
// + GENERIC_ERROR so ov2_verdict drops it), and before any inbound policy
// names the SA, both are accepted unchecked.
TEST_F(DataplaneE2E, DecryptedPacketOutsideTheInboundPolicyIsDroppedAsPolicyMismatch) {
  setup_tunnel(false);
  must("ip -n " + a_.ns->name() + " addr add 10.9.0.1/32 dev lo");
  // a's outbound SPD: the tunnel's own policies plus 10.9.0.0/24 -> b on the same SA.
  std::vector<CompiledPolicy> pa;
  protect(a_, a_.inner_net, b_.inner_net, ab_.out_handle, &pa);
  protect(a_, a_.inner_net6, b_.inner_net6, ab_.out_handle, &pa);
  protect(a_, "10.9.0.0/24", b_.inner_net, ab_.out_handle, &pa);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  const auto mismatches = [&] {
    return b_.dp->sa_counters(ab_.in_handle).by_reason[static_cast<size_t>(esp::Reason::PolicyMismatch)];
  };
  const auto ping_from_outside = [&] {
    return sh(a_.ns->exec("ping -c 3 -i 0.2 -W 1 -q -I 10.9.0.1 " + b_.inner_ip + " >/dev/null 2>&1"));
  };

  // No inbound policy names the SA yet: unchecked, the outside source is delivered.
  DataplaneCounters b0 = b_.dp->counters();
  ping_from_outside();  // no answer either way: b has no route back to 10.9.0.1
  ASSERT_TRUE(e2e::wait_for(
      [&] { return wc(*b_.dp, WorkerCounter::RxDecapsulated) >= b0.worker_count(WorkerCounter::RxDecapsulated) + 3; },
      3000))
      << dump(*b_.dp);
  EXPECT_EQ(mismatches(), 0u);

  // b's inbound SPD: PROTECT 10.1.0.0/24 -> 10.2.0.0/24 with this SA, and a
  // better-priority BYPASS of 10.9.0.0/24 (which must arrive in clear, not in the SA).
  std::vector<CompiledPolicy> in;
  for (auto [src, action, prio] : {std::tuple{"10.9.0.0/24", PolicyAction::Bypass, 10u},
                                   std::tuple{"10.1.0.0/24", PolicyAction::Protect, 1000u}}) {
    CompiledPolicy cp{};
    cp.id = static_cast<uint32_t>(in.size() + 1);
    cp.spec.dir = Direction::In;
    cp.spec.src = IpPrefix::parse(src);
    cp.spec.dst = IpPrefix::parse(b_.inner_net);
    cp.spec.action = action;
    cp.spec.priority = prio;
    cp.spec.sa_handle = action == PolicyAction::Protect ? ab_.in_handle : 0;
    cp.offload_handle = cp.spec.sa_handle;
    in.push_back(cp);
  }
  b_.dp->set_inbound_policies(in);

  b0 = b_.dp->counters();
  const uint64_t sa_ok0 = b_.dp->sa_counters(ab_.in_handle).packets;
  EXPECT_EQ(sh(a_.ns->exec("ping -c 2 -i 0.2 -W 2 -q " + b_.inner_ip + " >/dev/null")), 0)
      << "inside the policy: delivered and answered";
  EXPECT_NE(ping_from_outside(), 0);
  ASSERT_TRUE(e2e::wait_for([&] { return mismatches() >= 3; }, 3000)) << dump(*b_.dp);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const DataplaneCounters b1 = b_.dp->counters();
  auto d = [&](WorkerCounter c) { return b1.worker_count(c) - b0.worker_count(c); };
  EXPECT_EQ(mismatches(), 3u);
  EXPECT_EQ(d(WorkerCounter::RxPolicyMismatch), 3u);
  EXPECT_EQ(d(WorkerCounter::RxDecapsulated), 2u) << "the two pings from inside the policy";
  EXPECT_EQ(d(WorkerCounter::RxCryptoFailed), 0u);
  EXPECT_EQ(b_.dp->sa_counters(ab_.in_handle).packets - sa_ok0, 2u) << "a refused packet is not counted as ok";
  EXPECT_EQ(b1.verdict_status[CRYPTO_GENERIC_ERROR] - b0.verdict_status[CRYPTO_GENERIC_ERROR], 3u);
  EXPECT_EQ(b1.verdict[OV2_VERDICT_DROP_STATUS] - b0.verdict[OV2_VERDICT_DROP_STATUS], 3u);
  EXPECT_EQ(b1.verdict[OV2_VERDICT_ACCEPT] - b0.verdict[OV2_VERDICT_ACCEPT], 2u);

  // The policy replaced by one that covers 10.9.0.0/24 too: accepted again.
  in.erase(in.begin());
  in[0].spec.src = IpPrefix::parse("10.0.0.0/8");
  b_.dp->set_inbound_policies(in);
  const DataplaneCounters b2 = b_.dp->counters();
  ping_from_outside();
  ASSERT_TRUE(e2e::wait_for(
      [&] { return wc(*b_.dp, WorkerCounter::RxDecapsulated) >= b2.worker_count(WorkerCounter::RxDecapsulated) + 3; },
      3000))
      << dump(*b_.dp);
  EXPECT_EQ(mismatches(), 3u);
}

TEST_F(DataplaneE2E, InboundHardLifetimeRaisesSaDeleteReqEventsForThatHandle) {
  setup_tunnel(false, 3);
  std::vector<ov2_event> events;
  EventReader reader(b_.dp->programs().events_fd(), [&](const ov2_event& e) { events.push_back(e); });
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  EXPECT_EQ(sh(a_.ns->exec("ping -c 4 -i 0.2 -W 2 -q " + b_.inner_ip + " >/dev/null")), 0)
      << "NDIS: the engine keeps the SA until the deletes arrive";
  for (int i = 0; i < 10 && events.empty(); ++i) reader.poll(100);
  reader.poll(0);
  ASSERT_FALSE(events.empty()) << dump(*b_.dp);
  for (const ov2_event& e : events) {
    EXPECT_EQ(e.type, static_cast<uint32_t>(OV2_EVENT_SA_DELETE_REQ));
    EXPECT_EQ(e.sa_handle, ab_.in_handle);
    EXPECT_TRUE(ov2_rx_sa_delete_req(e.rx_info));
  }
  EXPECT_GE(b_.dp->counters().verdict[OV2_VERDICT_SA_DELETE_REQ], 1u);
}

TEST_F(DataplaneE2E, Ipv6InnerOverIpv4TunnelCarriesPingAndTcpAsEspWithGoodIcvs) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip6)) << "no ping answer through the tunnel (IPv6 inner)";
  start_capture();
  const DataplaneCounters a0 = a_.dp->counters(), b0 = b_.dp->counters();
  EXPECT_EQ(sh(a_.ns->exec("ping -c 5 -i 0.2 -W 2 -q " + b_.inner_ip6 + " >/dev/null")), 0);
  EXPECT_TRUE(tcp_transfer(a_.inner_ip6, b_.inner_ip6, 256 << 10)) << e2e::read_file(tmp_.file("tcp-client.log"));
  stop_capture();
  const DataplaneCounters a1 = a_.dp->counters(), b1 = b_.dp->counters();
  WireSummary w = summarize();
  const uint64_t ab = w.esp_good[ab_.out.spi];
  EXPECT_GT(ab, 0u);
  EXPECT_EQ(w.esp_bad_or_unchecked, 0u);
  for (const auto& l : w.not_esp) ADD_FAILURE() << "IP packet on the wire that is not ESP: " << l;
  const uint64_t sent = a1.worker_count(WorkerCounter::TxEncapsulated) - a0.worker_count(WorkerCounter::TxEncapsulated);
  EXPECT_EQ(b1.worker_count(WorkerCounter::RxDecapsulated) - b0.worker_count(WorkerCounter::RxDecapsulated), sent)
      << "a: " << dump(*a_.dp) << "\nb: " << dump(*b_.dp);
  EXPECT_EQ(b1.verdict[OV2_VERDICT_ACCEPT] - b0.verdict[OV2_VERDICT_ACCEPT], sent);
  EXPECT_GT(sent, (256u << 10) / 1400) << "256 KB of TCP plus pings";
  EXPECT_LE(ab, sent);
  EXPECT_LE(sent - ab, capture_drops()) << "the capture saw every packet it did not lose itself";
}

TEST_F(DataplaneE2E, UdpEncapsulatedTunnelCarriesPingAndTcpAsUdp4500EspWithGoodIcvs) {
  setup_tunnel(false, 0, true);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip)) << "no ping answer through the NAT-T tunnel";
  start_capture();
  const DataplaneCounters a0 = a_.dp->counters(), b0 = b_.dp->counters();
  EXPECT_EQ(sh(a_.ns->exec("ping -c 5 -i 0.2 -W 2 -q " + b_.inner_ip + " >/dev/null")), 0);
  EXPECT_TRUE(tcp_transfer(a_.inner_ip, b_.inner_ip, 128 << 10)) << e2e::read_file(tmp_.file("tcp-client.log"));
  stop_capture();
  const DataplaneCounters a1 = a_.dp->counters(), b1 = b_.dp->counters();
  WireSummary w = summarize();
  const uint64_t ab = w.esp_good[ab_.out.spi], ba = w.esp_good[ba_.out.spi];
  EXPECT_GT(ab, 5u);
  EXPECT_GT(ba, 5u);
  EXPECT_EQ(w.udp_encapsulated, ab + ba) << "every ESP packet in UDP/4500";
  EXPECT_EQ(w.esp_bad_or_unchecked, 0u);
  for (const auto& l : w.not_esp) ADD_FAILURE() << "IP packet on the wire that is not ESP: " << l;
  const uint64_t sent = a1.worker_count(WorkerCounter::TxEncapsulated) - a0.worker_count(WorkerCounter::TxEncapsulated);
  EXPECT_EQ(b1.worker_count(WorkerCounter::RxDecapsulated) - b0.worker_count(WorkerCounter::RxDecapsulated), sent);
  EXPECT_LE(sent - ab, capture_drops());
}

TEST_F(DataplaneE2E, TransportInsideTunnelBundleCarriesPingThroughBothSasOnEachHost) {
  start_dataplanes();
  // a -> b: transport SA 10.1.0.1 -> 10.2.0.1 inside tunnel SA 192.0.2.1 -> 192.0.2.2; and back.
  const auto [ab_tr, ba_tr] = setup_bundle({5, 6, 7, 8});
  ASSERT_TRUE(warm_up(a_, b_.inner_ip)) << "no ping answer through the bundle";
  start_capture();
  const DataplaneCounters b0 = b_.dp->counters();
  const uint64_t tr0 = b_.dp->sa_counters(ab_tr.in_handle).packets, tun0 = b_.dp->sa_counters(ab_.in_handle).packets;
  EXPECT_EQ(sh(a_.ns->exec("ping -c 4 -i 0.2 -W 2 -q " + b_.inner_ip + " >/dev/null")), 0);
  stop_capture();
  const DataplaneCounters b1 = b_.dp->counters();
  EXPECT_EQ(b_.dp->sa_counters(ab_tr.in_handle).packets - tr0, 4u) << "the transport SA opened each packet";
  EXPECT_EQ(b_.dp->sa_counters(ab_.in_handle).packets - tun0, 4u) << "the tunnel SA opened each packet";
  EXPECT_EQ(b1.verdict[OV2_VERDICT_ACCEPT] - b0.verdict[OV2_VERDICT_ACCEPT], 4u);
  WireSummary w = summarize();
  EXPECT_EQ(w.esp_good[ab_.out.spi], 4u) << "the outer (tunnel) ESP, ICV checked by tshark";
  EXPECT_EQ(w.esp_good[ba_.out.spi], 4u);
  for (const auto& l : w.not_esp) ADD_FAILURE() << "IP packet on the wire that is not ESP: " << l;
}

TEST_F(DataplaneE2E, BypassPolicySendsMatchingTrafficInClearAndTheRestStillAsEsp) {
  setup_tunnel(false);
  // a: ICMP to b's inner network bypasses (priority 10 beats the PROTECT policy's 1000).
  std::vector<CompiledPolicy> pa;
  protect(a_, a_.inner_net, b_.inner_net, ab_.out_handle, &pa);
  CompiledPolicy bypass{};
  bypass.id = 99;
  bypass.spec.dir = Direction::Out;
  bypass.spec.src = IpPrefix::parse(a_.inner_net);
  bypass.spec.dst = IpPrefix::parse(b_.inner_net);
  bypass.spec.proto = 1;
  bypass.spec.action = PolicyAction::Bypass;
  bypass.spec.priority = 10;
  pa.push_back(bypass);
  load_spd(a_.dp->programs().spd_trie_fd(), a_.dp->programs().spd_entries_fd(), compile_spd(pa), nullptr);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  start_capture();
  const DataplaneCounters a0 = a_.dp->counters();
  EXPECT_EQ(sh(a_.ns->exec("ping -c 3 -i 0.2 -W 2 -q " + b_.inner_ip + " >/dev/null")), 0);
  EXPECT_TRUE(tcp_transfer(a_.inner_ip, b_.inner_ip, 16 << 10)) << e2e::read_file(tmp_.file("tcp-client.log"));
  stop_capture();
  const DataplaneCounters a1 = a_.dp->counters();
  EXPECT_EQ(a1.worker_count(WorkerCounter::TxBypassed) - a0.worker_count(WorkerCounter::TxBypassed), 3u);
  WireSummary w = summarize();
  size_t clear_icmp = 0;
  for (const auto& l : w.not_esp)
    if (l.rfind(a_.inner_ip + " " + b_.inner_ip + " 1 ", 0) == 0) ++clear_icmp;
  EXPECT_EQ(clear_icmp, 3u) << "the echo requests a->b went in clear: " << tshark_raw_;
  EXPECT_EQ(w.not_esp.size(), 3u) << "nothing else in clear (the replies and the TCP are ESP)";
  EXPECT_GT(w.esp_good[ab_.out.spi], 5u) << "TCP a->b still protected";
  EXPECT_GE(w.esp_good[ba_.out.spi], 3u) << "replies b->a protected by b's policy";
}

class DataplaneE2ETwoQueues : public DataplaneE2E {
 protected:
  uint32_t queues() const override { return 2; }
  std::vector<int> cpus() const override { return {0, 1}; }
  // Two workers seal one SA's packets (sequence numbers claimed in turn) and
  // send them on two wire queues: a worker preempted between its claim and
  // its send (these 2 CPUs run both hosts) delivers behind up to a whole
  // transfer's worth of its sibling's packets.  A 64-packet window dropped
  // some of them as replays at load 10 (correct ESP, a flaky count here);
  // 1024, more than a test's transfer puts on one SA, cannot.
  uint32_t replay_window() const override { return 1024; }

  // One TCP transfer a -> b from a client pinned to each queue's CPU, queue 1
  // first.  With XPS on a's ov2 and on the bridge (SetUp, start_dataplanes),
  // each connection opens (at least its SYN: ACK-clocked segments go out from
  // the CPU the ACK came in on) through a's worker q and b's queue q.  Each
  // transfer checks the inner bytes end to end (count and SHA-256); a failed
  // one is reported, and the caller's counter checks say why.
  void transfer_from_each_queue(size_t bytes) {
    for (int q : {1, 0})
      EXPECT_TRUE(tcp_transfer(a_.inner_ip, b_.inner_ip, bytes, cpus()[q]))
          << "from cpu " << cpus()[q] << ": " << e2e::read_file(tmp_.file("tcp-client.log"));
  }
};

TEST_F(DataplaneE2ETwoQueues, TwoPinnedWorkersPerHostCarryPingAndTcpAsEsp) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip)) << dump(*a_.dp);
  start_capture();
  EXPECT_EQ(sh(a_.ns->exec("ping -c 3 -i 0.2 -W 2 -q " + b_.inner_ip + " >/dev/null")), 0);
  EXPECT_TRUE(tcp_transfer(a_.inner_ip, b_.inner_ip, 256 << 10)) << e2e::read_file(tmp_.file("tcp-client.log"));
  stop_capture();
  const DataplaneCounters a = a_.dp->counters(), b = b_.dp->counters();
  ASSERT_EQ(a.per_worker.size(), 2u);
  EXPECT_EQ(a.worker_count(WorkerCounter::RxForeignQueue) + b.worker_count(WorkerCounter::RxForeignQueue), 0u)
      << "a: " << dump(*a_.dp) << "\nb: " << dump(*b_.dp);
  EXPECT_EQ(a.worker_count(WorkerCounter::RxHandoffFull) + b.worker_count(WorkerCounter::RxHandoffFull), 0u);
  // Whatever queue they came in on, every ESP packet sent was opened.
  EXPECT_EQ(b.worker_count(WorkerCounter::RxDecapsulated), a.worker_count(WorkerCounter::TxEncapsulated))
      << "a: " << dump(*a_.dp) << "\nb: " << dump(*b_.dp);
  EXPECT_EQ(a.worker_count(WorkerCounter::RxDecapsulated), b.worker_count(WorkerCounter::TxEncapsulated))
      << "a: " << dump(*a_.dp) << "\nb: " << dump(*b_.dp);
  WireSummary w = summarize();
  EXPECT_GT(w.esp_good[ab_.out.spi], 0u);
  EXPECT_EQ(w.esp_bad_or_unchecked, 0u);
  for (const auto& l : w.not_esp) ADD_FAILURE() << "IP packet on the wire that is not ESP: " << l;
  std::cout << "per-queue tx-encapsulated on a: " << a.per_worker[0][size_t(WorkerCounter::TxEncapsulated)] << " / "
            << a.per_worker[1][size_t(WorkerCounter::TxEncapsulated)]
            << "; rx-decapsulated on b: " << b.per_worker[0][size_t(WorkerCounter::RxDecapsulated)] << " / "
            << b.per_worker[1][size_t(WorkerCounter::RxDecapsulated)] << "\n";
}

uint64_t per_worker(const DataplaneCounters& c, size_t q, WorkerCounter k) { return c.per_worker[q][size_t(k)]; }

// Counter `c` from `x` to `y`: summed over the workers, or of queue `q`'s worker.
uint64_t delta(const DataplaneCounters& x, const DataplaneCounters& y, WorkerCounter c) {
  return y.worker_count(c) - x.worker_count(c);
}
uint64_t delta(const DataplaneCounters& x, const DataplaneCounters& y, size_t q, WorkerCounter c) {
  return per_worker(y, q, c) - per_worker(x, q, c);
}

// From (a0, b0) to (a1, b1), for an a->b SA that b's worker 0 owns: a sent on
// both queues, b's queue q received what a's worker q sent, worker 1 handed
// every frame it received to worker 0, and worker 0 opened all `*sent` ESP
// packets a sent; nothing was dropped, and the host accepted every one.
void expect_worker0_opened_all(const DataplaneCounters& a0, const DataplaneCounters& a1, const DataplaneCounters& b0,
                               const DataplaneCounters& b1, const std::string& why, uint64_t* sent) {
  for (size_t q : {0, 1}) {
    ASSERT_GT(delta(a0, a1, q, WorkerCounter::TxEncapsulated), 0u) << "a sent on queue " << q << "; " << why;
    EXPECT_EQ(delta(b0, b1, q, WorkerCounter::RxPackets), delta(a0, a1, q, WorkerCounter::TxEncapsulated))
        << "b's queue " << q << " received what a's worker " << q << " sent; " << why;
  }
  *sent = delta(a0, a1, WorkerCounter::TxEncapsulated);
  EXPECT_GT(delta(b0, b1, 1, WorkerCounter::RxHandedOff), 0u) << why;
  EXPECT_EQ(delta(b0, b1, 1, WorkerCounter::RxHandedOff), delta(b0, b1, 1, WorkerCounter::RxPackets)) << why;
  EXPECT_EQ(delta(b0, b1, 0, WorkerCounter::RxHandedOff), 0u) << why;
  EXPECT_EQ(delta(b0, b1, 0, WorkerCounter::RxHandoffReceived), delta(b0, b1, 1, WorkerCounter::RxHandedOff)) << why;
  EXPECT_EQ(delta(b0, b1, 1, WorkerCounter::RxHandoffReceived), 0u) << why;
  EXPECT_EQ(delta(b0, b1, WorkerCounter::RxPackets), *sent) << "every ESP packet a sent reached b's workers; " << why;
  EXPECT_EQ(delta(b0, b1, 0, WorkerCounter::RxDecapsulated), *sent) << "the owner opened every one; " << why;
  EXPECT_EQ(delta(b0, b1, 1, WorkerCounter::RxDecapsulated), 0u) << why;
  for (WorkerCounter c : {WorkerCounter::RxForeignQueue, WorkerCounter::RxHandoffFull, WorkerCounter::RxCryptoFailed,
                          WorkerCounter::RxNoSa, WorkerCounter::RxMalformed})
    EXPECT_EQ(delta(b0, b1, c), 0u) << worker_counter_name(c) << "; " << why;
  EXPECT_EQ(b1.verdict[OV2_VERDICT_ACCEPT] - b0.verdict[OV2_VERDICT_ACCEPT], *sent) << "the host took every one";
}

// One SA's packets arrive on both of b's queues (a client pinned to each of
// a's queue CPUs; b's queue q receives what a's worker q sent): the worker
// that does not own the SA hands every one of them to the owner, and the
// owner opens all of them -- nothing is dropped.
TEST_F(DataplaneE2ETwoQueues, OneSaArrivingOnBothQueuesIsEntirelyDecapsulatedByItsOwnerThroughHandoff) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip)) << dump(*a_.dp);
  const DataplaneCounters a0 = a_.dp->counters(), b0 = b_.dp->counters();
  const uint64_t sa0 = b_.dp->sa_counters(ab_.in_handle).packets;
  transfer_from_each_queue(64 << 10);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const DataplaneCounters a1 = a_.dp->counters(), b1 = b_.dp->counters();
  const std::string why = "a: " + dump(*a_.dp) + "\nb: " + dump(*b_.dp);
  // The a->b SA is in slot 2: worker 0 owns it, worker 1 hands off all it receives.
  uint64_t sent = 0;
  ASSERT_NO_FATAL_FAILURE(expect_worker0_opened_all(a0, a1, b0, b1, why, &sent));
  EXPECT_EQ(b_.dp->sa_counters(ab_.in_handle).packets - sa0, sent);
  // The way back (b->a, slot 4: a's worker 0) has no drops either.
  EXPECT_EQ(delta(a0, a1, WorkerCounter::RxDecapsulated), delta(b0, b1, WorkerCounter::TxEncapsulated)) << why;
  EXPECT_EQ(delta(a0, a1, WorkerCounter::RxForeignQueue) + delta(a0, a1, WorkerCounter::RxHandoffFull), 0u) << why;
  std::cout << "a sent " << delta(a0, a1, 0, WorkerCounter::TxEncapsulated) << " / "
            << delta(a0, a1, 1, WorkerCounter::TxEncapsulated) << " on its queues; b handed off "
            << delta(b0, b1, WorkerCounter::RxHandedOff) << " of " << sent << "\n";
}

// A transport-in-tunnel bundle with two queues: the tunnel SA's owner (b's
// worker 0: slot 2) opens both SAs -- it claims the transport SA, whose own
// slot 7 would make worker 1 its owner -- also for the frames that arrive on
// b's queue 1, which worker 1 hands to it.  Frames reach both of b's queues
// deterministically (transfer_from_each_queue).
//
// (Until 2026-12-03 this test was disabled: every bundle frame arrived on b's
// queue 0.  The bridge in the middle re-picked the queue by the outer flow
// hash, which for the bundle's SPI gave queue 0 on that boot; see SetUp.)
TEST_F(DataplaneE2ETwoQueues, BundleArrivingOnBothQueuesIsOpenedByTheTunnelSaOwnerThroughHandoff) {
  start_dataplanes();
  const auto [ab_tr, ba_tr] = setup_bundle({5, 7, 9, 11});
  ASSERT_TRUE(warm_up(a_, b_.inner_ip)) << "no ping answer through the bundle";
  const DataplaneCounters a0 = a_.dp->counters(), b0 = b_.dp->counters();
  const SaRuntimeCounters tr0 = b_.dp->sa_counters(ab_tr.in_handle), tun0 = b_.dp->sa_counters(ab_.in_handle);
  transfer_from_each_queue(32 << 10);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const DataplaneCounters a1 = a_.dp->counters(), b1 = b_.dp->counters();
  const SaRuntimeCounters tr1 = b_.dp->sa_counters(ab_tr.in_handle), tun1 = b_.dp->sa_counters(ab_.in_handle);
  const std::string why = "a: " + dump(*a_.dp) + "\nb: " + dump(*b_.dp);
  uint64_t sent = 0;
  ASSERT_NO_FATAL_FAILURE(expect_worker0_opened_all(a0, a1, b0, b1, why, &sent));
  EXPECT_EQ(tr1.packets - tr0.packets, sent) << "the transport SA opened each packet";
  EXPECT_EQ(tun1.packets - tun0.packets, sent) << "the tunnel SA opened each packet";
  // Plaintext bytes: the tunnel SA's are the transport SA's ESP packets, so
  // more than the inner packets the transport SA opened, which carry both
  // transfers' bytes (TCP payload plus headers).
  EXPECT_GT(tr1.bytes - tr0.bytes, 2u * (32u << 10));
  EXPECT_GT(tun1.bytes - tun0.bytes, tr1.bytes - tr0.bytes);
  std::cout << "a sent " << delta(a0, a1, 0, WorkerCounter::TxEncapsulated) << " / "
            << delta(a0, a1, 1, WorkerCounter::TxEncapsulated) << " bundle packets on its queues; b handed off "
            << delta(b0, b1, WorkerCounter::RxHandedOff) << " of " << sent << "\n";
}

// A measurement, not a check (run with --gtest_also_run_disabled_tests): one
// 32 MiB TCP stream through the two-queue tunnel.  The stream's packets come in
// on one of b's queues; whether they are handed off depends on which (printed).
TEST_F(DataplaneE2ETwoQueues, DISABLED_MeasureOneTcpStreamWithOrWithoutHandoff) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  const DataplaneCounters b0 = b_.dp->counters();
  const size_t bytes = 32u << 20;
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(tcp_transfer(a_.inner_ip, b_.inner_ip, bytes)) << e2e::read_file(tmp_.file("tcp-client.log"));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const DataplaneCounters b1 = b_.dp->counters();
  auto d = [&](WorkerCounter c) { return b1.worker_count(c) - b0.worker_count(c); };
  std::cout << "32 MiB in " << s << " s = " << (bytes * 8 / s / 1e6) << " Mbit/s; b handed off "
            << d(WorkerCounter::RxHandedOff) << " of " << d(WorkerCounter::RxPackets)
            << " ESP packets; rx-handoff-full=" << d(WorkerCounter::RxHandoffFull) << "\n";
  EXPECT_EQ(d(WorkerCounter::RxHandoffFull), 0u);
}

// The anti-replay window is one per SA, whichever queue a packet comes in on:
// a captured packet injected again is detected as a replay on the owner's
// queue and when it arrives on the other queue (handed to the owner).
TEST_F(DataplaneE2ETwoQueues, ReplayedPacketIsDetectedWhicheverQueueItArrivesOn) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  start_capture();
  EXPECT_EQ(sh(a_.ns->exec("ping -c 3 -i 0.2 -W 2 -q " + b_.inner_ip + " >/dev/null")), 0);
  stop_capture();
  std::vector<std::string> frames = esp_frames(pcap_, ab_.out.spi);
  ASSERT_FALSE(frames.empty());
  auto replayed = [&] {
    return b_.dp->sa_counters(ab_.in_handle).by_reason[static_cast<size_t>(esp::Reason::Replayed)];
  };
  const DataplaneCounters b0 = b_.dp->counters();
  const uint64_t replayed0 = replayed();
  for (int cpu : {1, 0}) {  // queue 1 first: the non-owner
    const DataplaneCounters before = b_.dp->counters();
    inject_from_cpu(*mid_, "midb", frames.back(), cpu);
    ASSERT_TRUE(e2e::wait_for(
        [&] { return wc(*b_.dp, WorkerCounter::RxCryptoFailed) > before.worker_count(WorkerCounter::RxCryptoFailed); },
        3000))
        << "injected from cpu " << cpu << "; b: " << dump(*b_.dp);
    const DataplaneCounters after = b_.dp->counters();
    EXPECT_EQ(per_worker(after, size_t(cpu), WorkerCounter::RxPackets) -
                  per_worker(before, size_t(cpu), WorkerCounter::RxPackets),
              1u)
        << "the frame arrived on queue " << cpu << "; b: " << dump(*b_.dp);
    EXPECT_EQ(after.worker_count(WorkerCounter::RxHandedOff) - before.worker_count(WorkerCounter::RxHandedOff),
              cpu == 1 ? 1u : 0u);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const DataplaneCounters b1 = b_.dp->counters();
  EXPECT_EQ(replayed(), replayed0 + 2) << "both copies caught by the one window";
  EXPECT_EQ(b1.verdict_status[CRYPTO_GENERIC_ERROR] - b0.verdict_status[CRYPTO_GENERIC_ERROR], 2u);
  EXPECT_EQ(b1.verdict[OV2_VERDICT_ACCEPT], b0.verdict[OV2_VERDICT_ACCEPT]);
  EXPECT_EQ(b1.worker_count(WorkerCounter::RxForeignQueue), 0u);
}

TEST_F(DataplaneE2E, Ipv6OuterTunnelCarriesPingAsEspWithGoodIcvs) {
  setup_tunnel(true);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip)) << "no ping answer through the IPv6 tunnel";
  start_capture();
  const DataplaneCounters a0 = a_.dp->counters();
  EXPECT_EQ(sh(a_.ns->exec("ping -c 5 -i 0.2 -W 2 -q " + b_.inner_ip + " >/dev/null")), 0);
  stop_capture();
  const DataplaneCounters a1 = a_.dp->counters();
  WireSummary w = summarize();
  EXPECT_EQ(w.esp_good[ab_.out.spi], 5u);
  EXPECT_EQ(w.esp_good[ba_.out.spi], 5u);
  EXPECT_EQ(w.esp_bad_or_unchecked, 0u);
  EXPECT_EQ(a1.worker_count(WorkerCounter::TxEncapsulated) - a0.worker_count(WorkerCounter::TxEncapsulated), 5u);
  EXPECT_EQ(a1.worker_count(WorkerCounter::RxDecapsulated) - a0.worker_count(WorkerCounter::RxDecapsulated), 5u);
}

// Transport mode between the wire addresses themselves (`v6`: IPv6 addresses).
void DataplaneE2E::setup_transport(bool v6, int route_mtu) {
  start_dataplanes();
  const std::string a = v6 ? a_.wire_ip6 : a_.wire_ip, b = v6 ? b_.wire_ip6 : b_.wire_ip;
  const std::string len = v6 ? "/128" : "/32";
  ab_ = make_pair(a, b, 0x3003, 1, 2, Mode::Transport);
  ba_ = make_pair(b, a, 0x4004, 3, 4, Mode::Transport);
  install(a_, b_, ab_);
  install(b_, a_, ba_);
  std::vector<CompiledPolicy> pa, pb;
  // IKE (UDP 500) between the hosts stays in clear: a bypass policy with a
  // better priority than the protect policy, as an IKE daemon would install.
  CompiledPolicy ike{};
  ike.id = 100;
  ike.spec.dir = Direction::Out;
  ike.spec.src = IpPrefix::parse(a + len);
  ike.spec.dst = IpPrefix::parse(b + len);
  ike.spec.proto = 17;
  ike.spec.dport = PortRange{500, 500};
  ike.spec.action = PolicyAction::Bypass;
  ike.spec.priority = 10;
  pa.push_back(ike);
  protect(a_, a + len, b + len, ab_.out_handle, &pa);
  protect(b_, b + len, a + len, ba_.out_handle, &pb);
  // More specific than the wire's connected prefix: the host sends these into ov2.
  if (route_mtu < 0) route_mtu = static_cast<int>(a_.dp->device().route_mtu());
  const std::string mtu = route_mtu ? " mtu " + std::to_string(route_mtu) : "";
  must("ip -n " + a_.ns->name() + " route add " + b + len + " dev ov2 src " + a + mtu);
  must("ip -n " + b_.ns->name() + " route add " + a + len + " dev ov2 src " + b + mtu);
}

void DataplaneE2E::run_transport(bool v6) {
  setup_transport(v6, route_mtu_ ? -1 : 0);
  const std::string a = v6 ? a_.wire_ip6 : a_.wire_ip, b = v6 ? b_.wire_ip6 : b_.wire_ip;
  ASSERT_TRUE(warm_up(a_, b)) << "no ping answer in transport mode";
  const DataplaneCounters a0 = a_.dp->counters();
  start_capture();
  EXPECT_EQ(sh(a_.ns->exec("ping -c 4 -i 0.2 -W 2 -q " + b + " >/dev/null")), 0);
  // One IKE-port datagram a -> b (bash's /dev/udp): it must cross in clear.
  EXPECT_EQ(sh(a_.ns->exec("bash -c 'echo ike-sa-init > /dev/udp/" + b + "/500'")), 0);
  stop_capture();
  const DataplaneCounters a1 = a_.dp->counters();
  EXPECT_EQ(a1.worker_count(WorkerCounter::TxBypassed) - a0.worker_count(WorkerCounter::TxBypassed), 1u)
      << "the IKE datagram took the bypass policy";
  WireSummary w = summarize();
  EXPECT_EQ(w.esp_good[ab_.out.spi], 4u) << tshark_raw_;
  EXPECT_EQ(w.esp_good[ba_.out.spi], 5u) << "4 echo replies + b's ICMP port unreachable for the IKE datagram: "
                                         << tshark_raw_;
  EXPECT_EQ(w.esp_bad_or_unchecked, 0u);
  size_t clear_ike = 0;
  for (const auto& l : w.not_esp) {
    if (l.rfind(a + " " + b + " 17 ", 0) == 0) {
      ++clear_ike;
      continue;
    }
    // b answers the datagram with ICMP port unreachable, protected by its policy (ESP); nothing else is clear.
    ADD_FAILURE() << "IP packet on the wire that is not ESP: " << l;
  }
  EXPECT_EQ(clear_ike, 1u) << "the IKE datagram went in clear: " << tshark_raw_;
  if (route_mtu_) return;
  // Path MTU discovery: a full-size DF packet gets the transport SA's MTU
  // (AES-GCM-128: 1500 - ESP header 8 - IV 8 - ICV 16 - worst padding 3 - 2 = 1463),
  // from b's address, which the host accepts on ov2.
  const std::string out =
      sh_out(a_.ns->exec("ping -c 1 -W 2 -M do -s " + std::string(v6 ? "1452 " : "1472 ") + b + " 2>&1"));
  EXPECT_NE(out.find(v6 ? "Packet too big: mtu=1463" : "Frag needed and DF set (mtu = 1463)"), std::string::npos)
      << out << "\na: " << dump(*a_.dp);
  const std::string route = sh_out(a_.ns->exec("ip route get " + b));
  EXPECT_NE(route.find("mtu 1463"), std::string::npos) << route;
  EXPECT_EQ(sh(a_.ns->exec("ping -c 2 -i 0.2 -W 2 -q -M do -s " + std::to_string(1463 - (v6 ? 48 : 28)) + " " + b +
                           " >/dev/null")),
            0)
      << "the largest packet that fits goes through: " << dump(*a_.dp);
}

TEST_F(DataplaneE2E, TransportModeProtectsTrafficBetweenTheWireAddresses) { run_transport(false); }

TEST_F(DataplaneE2E, TransportModeOverIpv6ProtectsTrafficBetweenTheWireAddresses) { run_transport(true); }

TEST_F(DataplaneE2E, OffloadDeviceReplacesALeftoverPairAndIsNoarpWithEspMtuAndNoLinkLocal) {
  // What a crashed run leaves behind: a pair with our names (and a stray address).
  must("ip -n " + a_.ns->name() + " link add ov2 type veth peer name ov2-nic");
  must("ip -n " + a_.ns->name() + " addr add 198.51.100.1/24 dev ov2");
  start_dataplanes();
  const std::string link = sh_out("ip -n " + a_.ns->name() + " -d link show dev ov2");
  EXPECT_NE(link.find("NOARP"), std::string::npos) << link;
  EXPECT_NE(link.find(",UP"), std::string::npos) << link;
  EXPECT_NE(link.find("mtu 1500 "), std::string::npos) << "room for the largest decrypted packet + shim: " << link;
  EXPECT_NE(link.find("xdp"), std::string::npos) << "ov2_deliver attached: " << link;
  const std::string addrs = sh_out("ip -n " + a_.ns->name() + " addr show dev ov2");
  EXPECT_EQ(addrs.find("198.51.100.1"), std::string::npos) << "the leftover was replaced, not reused as is";
  EXPECT_EQ(addrs.find("fe80"), std::string::npos) << "no link-local address, so no DAD/RS/NDP: " << addrs;
  const std::string nic = sh_out("ip -n " + a_.ns->name() + " -d link show dev ov2-nic");
  EXPECT_NE(nic.find("xdp"), std::string::npos) << "ov2_tx attached: " << nic;
  EXPECT_EQ(a_.dp->device().route_mtu(), 1500 - kWorstCaseEspOverhead);
  // Stopping removes the pair.
  {
    InNetns in(*a_.ns);
    a_.dp->stop();
  }
  EXPECT_NE(sh("ip -n " + a_.ns->name() + " link show dev ov2 >/dev/null 2>&1"), 0);
  EXPECT_NE(sh("ip -n " + a_.ns->name() + " link show dev ov2-nic >/dev/null 2>&1"), 0);
}

TEST_F(DataplaneE2E, RemovedSaStopsTrafficAndUnknownHandleIsCounted) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  a_.dp->remove_sa(ab_.out_handle);
  const uint64_t unknown0 = wc(*a_.dp, WorkerCounter::TxUnknownHandle);
  EXPECT_NE(sh(a_.ns->exec("ping -c 2 -i 0.2 -W 1 -q " + b_.inner_ip + " >/dev/null")), 0);
  EXPECT_EQ(wc(*a_.dp, WorkerCounter::TxUnknownHandle) - unknown0, 2u);
  EXPECT_THROW(a_.dp->remove_sa(ab_.out_handle), Error);
  // A new SA under a new handle (same slot, next sequence) restores traffic.
  SaPair again = make_pair(a_.wire_ip, b_.wire_ip, 0x5005, 1, 5);
  again.out_handle = handle_of(8, 1);
  a_.dp->install_sa(again.out_handle, again.out);
  b_.dp->install_sa(again.in_handle, again.in);
  std::vector<CompiledPolicy> pa;
  protect(a_, a_.inner_net, b_.inner_net, again.out_handle, &pa);
  EXPECT_EQ(sh(a_.ns->exec("ping -c 2 -i 0.2 -W 2 -q " + b_.inner_ip + " >/dev/null")), 0);
  // The old handle's slot now belongs to the new SA: the stale handle stays unknown.
  EXPECT_THROW(a_.dp->sa_counters(ab_.out_handle), Error);
}

}  // namespace
}  // namespace ov2

namespace ov2 {
namespace {

// Path MTU through the tunnel (esp/path_mtu.h): routes into ov2 carry no
// `mtu`; ov2 takes 1500-byte packets; the worker answers what would not fit
// the wire after ESP.  AES-GCM-128 tunnel over IPv4, wire MTU 1500:
// 1500 - outer IPv4 20 - ESP header 8 - IV 8 - ICV 16 = 1448 bytes for
// payload + padding + 2, a multiple of 4: the largest inner packet is 1446.
constexpr int kTunnelPmtu = 1446;

class DataplanePmtuE2E : public DataplaneE2E {
 protected:
  void SetUp() override {
    route_mtu_ = false;
    DataplaneE2E::SetUp();
  }
  uint64_t worker(Endpoint& ep, WorkerCounter c) { return ep.dp->counters().worker_count(c); }
  // The capture holds ESP only, every ICV good, nothing above the wire MTU.
  void expect_wire_only_esp_within_mtu(uint64_t at_least) {
    WireSummary w = summarize();
    EXPECT_GE(w.esp_good[ab_.out.spi], at_least) << tshark_raw_;
    EXPECT_EQ(w.esp_bad_or_unchecked, 0u) << tshark_raw_;
    EXPECT_LE(w.max_frame, 14u + 1500u) << "no ESP packet above the wire MTU";
    for (const auto& l : w.not_esp) ADD_FAILURE() << "IP packet on the wire that is not ESP: " << l;
  }
};

TEST_F(DataplanePmtuE2E, Ipv4DfPacketTooBigForTheTunnelGetsFragNeededAndTheRouteLearnsTheMtu) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  start_capture();
  const uint64_t icmp0 = worker(a_, WorkerCounter::TxIcmpTooBig);
  const uint64_t plain0 = a_.dp->counters().verdict[OV2_VERDICT_ACCEPT_PLAIN];
  // 1472 + 28 = 1500 bytes with DF: fits ov2, not the wire after ESP.
  const std::string out = sh_out(a_.ns->exec("ping -c 1 -W 2 -M do -s 1472 " + b_.inner_ip + " 2>&1"));
  EXPECT_NE(out.find("Frag needed and DF set (mtu = " + std::to_string(kTunnelPmtu) + ")"), std::string::npos)
      << out << "\na: " << dump(*a_.dp);
  EXPECT_EQ(worker(a_, WorkerCounter::TxIcmpTooBig) - icmp0, 1u) << dump(*a_.dp);
  EXPECT_EQ(a_.dp->counters().verdict[OV2_VERDICT_ACCEPT_PLAIN] - plain0, 1u)
      << "the error reached the host through ov2_verdict as a plain packet";
  // The host stack took it: a route exception with the tunnel's MTU.
  const std::string route = sh_out(a_.ns->exec("ip route get " + b_.inner_ip));
  EXPECT_NE(route.find("mtu " + std::to_string(kTunnelPmtu)), std::string::npos) << route;
  EXPECT_NE(route.find("cache expires"), std::string::npos) << route;
  // Now the largest packet that fits goes through, and one byte more is refused locally.
  EXPECT_EQ(sh(a_.ns->exec("ping -c 2 -i 0.2 -W 2 -q -M do -s " + std::to_string(kTunnelPmtu - 28) + " " + b_.inner_ip +
                           " >/dev/null")),
            0)
      << dump(*a_.dp);
  EXPECT_NE(sh(a_.ns->exec("ping -c 1 -W 1 -q -M do -s " + std::to_string(kTunnelPmtu - 27) + " " + b_.inner_ip +
                           " >/dev/null 2>&1")),
            0);
  // TCP from the default MSS (1460) converges on the learned MTU.
  must(a_.ns->exec("ip route flush cache"));
  EXPECT_TRUE(tcp_transfer(a_.inner_ip, b_.inner_ip, 512 << 10)) << e2e::read_file(tmp_.file("tcp-client.log"));
  EXPECT_GE(worker(a_, WorkerCounter::TxIcmpTooBig) - icmp0, 2u) << "the transfer learned the MTU again";
  stop_capture();
  expect_wire_only_esp_within_mtu(5);
  EXPECT_EQ(worker(a_, WorkerCounter::TxTooBig), 0u) << dump(*a_.dp);
}

TEST_F(DataplanePmtuE2E, Ipv4WithoutDfIsFragmentedBeforeEspAndEveryFragmentIsItsOwnEspPacket) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  start_capture();
  const DataplaneCounters a0 = a_.dp->counters(), b0 = b_.dp->counters();
  // 3028 bytes: the host fragments it for ov2 (1500), the worker each of those for the tunnel (1446).
  EXPECT_EQ(sh(a_.ns->exec("ping -c 3 -i 0.2 -W 2 -q -M dont -s 3000 " + b_.inner_ip + " >/dev/null")), 0)
      << "a: " << dump(*a_.dp) << "\nb: " << dump(*b_.dp);
  stop_capture();
  const DataplaneCounters a1 = a_.dp->counters(), b1 = b_.dp->counters();
  auto d = [](const DataplaneCounters& x, const DataplaneCounters& y, WorkerCounter c) {
    return y.worker_count(c) - x.worker_count(c);
  };
  // Each 3028-byte echo: host fragments 1500 + 1500 + 68; the first two
  // exceed 1446 and become 2 each: 5 ESP packets per echo, in both directions.
  EXPECT_EQ(d(a0, a1, WorkerCounter::TxFragmented), 6u) << dump(*a_.dp);
  EXPECT_EQ(d(a0, a1, WorkerCounter::TxEncapsulated), 15u) << dump(*a_.dp);
  EXPECT_EQ(d(b0, b1, WorkerCounter::TxFragmented), 6u) << "the replies too: " << dump(*b_.dp);
  EXPECT_EQ(d(b0, b1, WorkerCounter::RxDecapsulated), 15u) << "every fragment opened on its own";
  EXPECT_EQ(d(a0, a1, WorkerCounter::TxIcmpTooBig), 0u);
  EXPECT_EQ(d(a0, a1, WorkerCounter::TxTooBig), 0u);
  expect_wire_only_esp_within_mtu(15);
}

TEST_F(DataplanePmtuE2E, Ipv6PacketTooBigForTheTunnelGetsPacketTooBigAndTheRouteLearnsTheMtu) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip6));
  start_capture();
  const uint64_t icmp0 = worker(a_, WorkerCounter::TxIcmpTooBig);
  // 1452 + 48 = 1500 bytes.
  const std::string out = sh_out(a_.ns->exec("ping -c 1 -W 2 -s 1452 " + b_.inner_ip6 + " 2>&1"));
  EXPECT_NE(out.find("Packet too big: mtu=" + std::to_string(kTunnelPmtu)), std::string::npos)
      << out << "\na: " << dump(*a_.dp);
  EXPECT_EQ(worker(a_, WorkerCounter::TxIcmpTooBig) - icmp0, 1u) << dump(*a_.dp);
  const std::string route = sh_out(a_.ns->exec("ip -6 route get " + b_.inner_ip6));
  EXPECT_NE(route.find("mtu " + std::to_string(kTunnelPmtu)), std::string::npos) << route;
  // The host now fragments (IPv6, at the source) to fit: a big ping is answered.
  EXPECT_EQ(sh(a_.ns->exec("ping -c 2 -i 0.2 -W 2 -q -s 3000 " + b_.inner_ip6 + " >/dev/null")), 0) << dump(*a_.dp);
  EXPECT_TRUE(tcp_transfer(a_.inner_ip6, b_.inner_ip6, 256 << 10)) << e2e::read_file(tmp_.file("tcp-client.log"));
  stop_capture();
  expect_wire_only_esp_within_mtu(5);
  EXPECT_EQ(worker(a_, WorkerCounter::TxTooBig), 0u) << dump(*a_.dp);
}

// A burst of too-big DF packets (raw socket: the host's own PMTU does not stop
// them): the worker answers the bucket's burst (50) and one a millisecond more,
// and counts the rest as tx-too-big.
// A wire of 1330 bytes: the GCM tunnel carries 1330 - 52 = 1278 -> 1274-byte
// inner packets, less than IPv6's 1280.  RFC 8201 senders ignore a Packet Too
// Big below 1280, so bigger IPv6 packets learn 1280 and packets of at most
// 1280 that do not fit are dropped (tx-too-big); IPv4 learns 1274.
class DataplaneSmallWirePmtuE2E : public DataplanePmtuE2E {
 protected:
  void SetUp() override {
    wire_mtu_ = 1330;
    DataplanePmtuE2E::SetUp();
  }
};

TEST_F(DataplaneSmallWirePmtuE2E, TunnelBelow1280GivesIpv6APacketTooBigOf1280AndIpv4ItsExactMtu) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip6));
  // 1270 + 48 = 1318 bytes: fits ov2 (1330), above 1280.
  std::string out = sh_out(a_.ns->exec("ping -c 1 -W 2 -s 1270 " + b_.inner_ip6 + " 2>&1"));
  EXPECT_NE(out.find("Packet too big: mtu=1280"), std::string::npos) << out << "\na: " << dump(*a_.dp);
  const uint64_t too_big0 = worker(a_, WorkerCounter::TxTooBig);
  // 1232 + 48 = 1280 bytes: the host may send it, the tunnel cannot carry it.
  EXPECT_NE(sh(a_.ns->exec("ping -c 1 -W 1 -q -s 1232 " + b_.inner_ip6 + " >/dev/null 2>&1")), 0);
  EXPECT_EQ(worker(a_, WorkerCounter::TxTooBig) - too_big0, 1u) << dump(*a_.dp);
  // 1226 + 48 = 1274: the largest that fits.
  EXPECT_EQ(sh(a_.ns->exec("ping -c 1 -W 2 -q -s 1226 " + b_.inner_ip6 + " >/dev/null")), 0) << dump(*a_.dp);
  out = sh_out(a_.ns->exec("ping -c 1 -W 2 -M do -s 1300 " + b_.inner_ip + " 2>&1"));
  EXPECT_NE(out.find("Frag needed and DF set (mtu = 1274)"), std::string::npos) << out << "\na: " << dump(*a_.dp);
}

TEST_F(DataplanePmtuE2E, TransportModeFullSizePacketLearnsTheTransportSaMtu) { run_transport(false); }

TEST_F(DataplanePmtuE2E, TransportModeOverIpv6FullSizePacketLearnsTheTransportSaMtu) { run_transport(true); }

TEST_F(DataplanePmtuE2E, IcmpErrorsAreRateLimitedAndTheRestCountedAsTooBig) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  const DataplaneCounters a0 = a_.dp->counters();
  const std::string script =
      "import socket,struct,time\n"
      "s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)\n"
      "h=struct.pack('!BBHHHBBH4s4s',0x45,0,1500,0,0x4000,64,17,0,socket.inet_aton('" +
      a_.inner_ip + "'),socket.inet_aton('" + b_.inner_ip +
      "'))\n"
      "p=h+struct.pack('!HHHH',9,9,1480,0)+bytes(1472)\n"
      "t=time.monotonic()\n"
      "for i in range(200): s.sendto(p,('" +
      b_.inner_ip + "',0))\n";
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(sh(a_.ns->exec("python3 -c \"" + script + "\"")), 0);
  ASSERT_TRUE(e2e::wait_for(
      [&] {
        const DataplaneCounters c = a_.dp->counters();
        return c.worker_count(WorkerCounter::TxPackets) - a0.worker_count(WorkerCounter::TxPackets) >= 200;
      },
      5000))
      << dump(*a_.dp);
  const DataplaneCounters a1 = a_.dp->counters();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  const uint64_t icmp = a1.worker_count(WorkerCounter::TxIcmpTooBig) - a0.worker_count(WorkerCounter::TxIcmpTooBig);
  const uint64_t too_big = a1.worker_count(WorkerCounter::TxTooBig) - a0.worker_count(WorkerCounter::TxTooBig);
  EXPECT_EQ(icmp + too_big, 200u) << dump(*a_.dp);
  EXPECT_GE(icmp, 50u) << "the burst";
  EXPECT_LE(icmp, 50u + static_cast<uint64_t>(ms) + 1) << "the burst plus one a millisecond (" << ms << " ms)";
  EXPECT_GT(too_big, 0u);
}

// ---------------------------------------------------------------------------
// Outer fragments of ESP (esp/reassembly.h): reassembled before ESP on receive;
// transport SAs fragment after ESP on transmit.

// Rows of tshark for the ESP on the capture (IPv4): MF, fragment offset, SPI,
// ICV good, frame length -- tshark reassembles the fragments itself and opens
// the reassembled ESP with the SAs.
struct EspWireRow {
  bool fragment;
  std::string spi, icv_good;
  uint64_t frame_len;
};

class DataplaneFragmentE2E : public DataplaneE2E {
 protected:
  std::vector<EspWireRow> esp_rows() {
    std::vector<EspWireRow> rows;
    for (const auto& f : tshark_fields(
             "ip.proto == 50", " -e ip.flags.mf -e ip.frag_offset -e esp.spi -e esp.icv_good -e frame.len", 5)) {
      const bool mf = f[0] == "1" || f[0] == "True";
      rows.push_back({mf || (!f[1].empty() && f[1] != "0"), f[2], f[3], f[4].empty() ? 0 : std::stoull(f[4])});
    }
    return rows;
  }

  // What esp_rows says about the capture: fragments, datagrams of SPI `spi`
  // that tshark opened with a good ICV, and any it found bad.  Every frame
  // must fit the wire's MTU of 1500 bytes.
  struct EspTally {
    uint64_t fragments = 0, good = 0, bad = 0;
  };
  EspTally tally_esp(const std::string& spi) {
    EspTally t;
    for (const EspWireRow& r : esp_rows()) {
      EXPECT_LE(r.frame_len, 14u + 1500u);
      if (r.fragment) ++t.fragments;
      if (r.icv_good == "True" || r.icv_good == "1") {
        if (r.spi == spi) ++t.good;
      } else if (!r.icv_good.empty()) {
        ++t.bad;
      }
    }
    return t;
  }

  std::string mac_of(const Endpoint& ep) {
    std::istringstream ss(sh_out("ip -n " + ep.ns->name() + " -br link show wire"));
    std::string name, state, mac;
    ss >> name >> state >> mac;
    return mac;
  }

  // What scapy_esp_fragments builds (tests/e2e/esp_fragments.py says more).
  struct Fragments {
    std::string kind = "good";  // good, overlap, beyond, far, unended, ike
    uint32_t seq = 1;
    uint32_t ip_id = 1;
    bool v6 = false;             // the SA's outer addresses are IPv6 (setup_tunnel(true))
    bool natt = false;           // ESP in UDP 4500 (setup_tunnel(false, 0, true))
    uint32_t payload = 1300;     // bytes after the inner ICMP/UDP header
    uint32_t fragsize = 0;       // outer fragment payload; 0: 512 (IPv4 outer) or 600 (IPv6)
    std::string inner = "icmp";  // icmp (echo request), udp, udp6 (to b's inner address, port dport)
    bool df = false;             // inner udp: DF
    uint16_t dport = 0;
    uint32_t count = 1;  // kind far: datagrams (IP ids ip_id, ip_id + 1, ...)
    std::string extra;   // more JSON members for the script, overriding the above (`, "outer_dst": "..."`)
  };

  // Frames of tunnel ESP on the a->b SA carrying an echo request from a's
  // inner address to b's, cut into outer fragments by scapy
  // (tests/e2e/esp_fragments.py; `kind` there).  The key goes through a
  // private file, never a command line.
  std::vector<std::string> scapy_esp_fragments(const std::string& kind, uint32_t seq, uint32_t ip_id, bool v6 = false,
                                               bool natt = false, const std::string& extra = "") {
    return scapy_esp_fragments(
        Fragments{.kind = kind, .seq = seq, .ip_id = ip_id, .v6 = v6, .natt = natt, .extra = extra});
  }
  // A UDP datagram of `payload` bytes (scapy's pattern) from a's inner
  // address to b's, port `dport`, in ESP in outer fragments of 1480 bytes of
  // payload (a 1500-byte wire), last first.
  static Fragments udp_datagram(uint16_t dport, uint32_t payload, uint32_t seq, uint32_t ip_id) {
    return Fragments{.seq = seq, .ip_id = ip_id, .payload = payload, .fragsize = 1480, .inner = "udp", .dport = dport};
  }
  std::vector<std::string> scapy_esp_fragments(const Fragments& s) {
    const std::string conf = tmp_.file("fragments.json");
    {
      std::ofstream f(conf, std::ios::trunc);
      chmod(conf.c_str(), 0600);
      f << "{\"spi\": " << ab_.out.spi << ", \"key\": \"" << hex(ab_.out.enc_key.span()) << "\", \"seq\": " << s.seq
        << ", \"outer_src\": \"" << (s.v6 ? a_.wire_ip6 : a_.wire_ip) << "\", \"outer_dst\": \""
        << (s.v6 ? b_.wire_ip6 : b_.wire_ip) << "\", \"inner_src\": \"" << a_.inner_ip << "\", \"inner_dst\": \""
        << b_.inner_ip << "\", \"inner_src6\": \"" << a_.inner_ip6 << "\", \"inner_dst6\": \"" << b_.inner_ip6
        << "\", \"src_mac\": \"" << mac_of(a_) << "\", \"dst_mac\": \"" << mac_of(b_)
        << "\", \"payload\": " << s.payload << ", \"fragsize\": "
        << (s.fragsize ? s.fragsize
            : s.v6     ? 600
                       : 512)
        << ", \"ip_id\": " << s.ip_id << ", \"natt\": " << (s.natt ? "true" : "false") << ", \"inner\": \"" << s.inner
        << "\", \"df\": " << (s.df ? "true" : "false") << ", \"dport\": " << s.dport << ", \"count\": " << s.count
        << ", \"kind\": \"" << s.kind << "\"" << s.extra << "}";
    }
    const std::string out = sh_out(std::string("/usr/bin/python3 ") + OV2_SOURCE_DIR +
                                   "/tests/e2e/esp_fragments.py < " + conf + " 2>" + tmp_.file("fragments.err"));
    std::vector<std::string> frames;
    std::istringstream ss(out);
    std::string line;
    while (std::getline(ss, line)) {
      std::string f(line.size() / 2, '\0');
      for (size_t i = 0; i < f.size(); ++i) f[i] = static_cast<char>(std::stoi(line.substr(2 * i, 2), nullptr, 16));
      frames.push_back(f);
    }
    return frames;
  }

  // b's counters once its worker has taken `n` more fragments than in
  // `before` (and 200 ms more for the rest of their path).
  DataplaneCounters counters_after_fragments(const DataplaneCounters& before, uint64_t n) {
    EXPECT_TRUE(e2e::wait_for(
        [&] {
          return b_.dp->counters().worker_count(WorkerCounter::RxFragments) -
                     before.worker_count(WorkerCounter::RxFragments) >=
                 n;
        },
        3000))
        << dump(*b_.dp);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return b_.dp->counters();
  }

  void expect_fragments_opened_and_answered(uint32_t seq, uint32_t ip_id, bool v6, std::vector<std::string>* frames,
                                            DataplaneCounters* after, const std::string& extra = "");

  // A UDP socket on b's inner IPv4 address, port `port`, that takes `count`
  // datagrams and prints for each "<length> ok" if it is scapy's pattern
  // (esp_fragments.py: i % 251), "<length> differs" otherwise; log udp.log.
  std::unique_ptr<Child> udp_pattern_listener(uint16_t port, int count) {
    const std::string script = tmp_.file("udp_listener.py");
    {
      std::ofstream f(script, std::ios::trunc);
      f << "import socket\n"
           "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
           "s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)\n"
           "s.bind(('"
        << b_.inner_ip << "', " << port << "))\n"
        << "s.settimeout(15)\n"
           "for _ in range("
        << count << "):\n"
        << "    d = s.recv(65535)\n"
           "    print(len(d), 'ok' if d == bytes(i % 251 for i in range(len(d))) else 'differs', flush=True)\n";
    }
    auto child = std::make_unique<Child>(b_.ns->exec("/usr/bin/python3 " + script), tmp_.file("udp.log"));
    const std::string bound = ":" + std::to_string(port) + " ";
    EXPECT_TRUE(e2e::wait_for([&] { return sh_out(b_.ns->exec("ss -lun")).find(bound) != std::string::npos; }, 5000))
        << "the UDP listener did not start: " << e2e::read_file(tmp_.file("udp.log"));
    return child;
  }
  // The listener's lines once it printed `lines` (or after 5 s).
  std::string udp_log(size_t lines) {
    e2e::wait_for(
        [&] {
          const std::string log = e2e::read_file(tmp_.file("udp.log"));
          return static_cast<size_t>(std::count(log.begin(), log.end(), '\n')) >= lines;
        },
        5000);
    return e2e::read_file(tmp_.file("udp.log"));
  }
};

uint64_t wdelta(const DataplaneCounters& x, const DataplaneCounters& y, WorkerCounter c) {
  return y.worker_count(c) - x.worker_count(c);
}

// Injects scapy's 3 fragments of one good echo request a -> b (`seq`, IP id
// `ip_id`, outer IPv6 if `v6`) and checks b reassembled and opened it once
// and answered through its SA.  The frames and b's counters after go out.
void DataplaneFragmentE2E::expect_fragments_opened_and_answered(uint32_t seq, uint32_t ip_id, bool v6,
                                                                std::vector<std::string>* frames,
                                                                DataplaneCounters* after, const std::string& extra) {
  *frames = scapy_esp_fragments("good", seq, ip_id, v6, false, extra);
  ASSERT_EQ(frames->size(), 3u) << e2e::read_file(tmp_.file("fragments.err"));
  const DataplaneCounters b0 = b_.dp->counters();
  inject(*a_.ns, "wire", *frames);
  ASSERT_TRUE(e2e::wait_for([&] { return wdelta(b0, b_.dp->counters(), WorkerCounter::TxEncapsulated) >= 1; }, 3000))
      << "b answered the echo request through its SA: " << dump(*b_.dp);
  *after = b_.dp->counters();
  EXPECT_EQ(after->wire[OV2_WIRE_REDIRECT_FRAGMENT] - b0.wire[OV2_WIRE_REDIRECT_FRAGMENT], 3u);
  EXPECT_EQ(wdelta(b0, *after, WorkerCounter::RxFragments), 3u);
  EXPECT_EQ(wdelta(b0, *after, WorkerCounter::RxReassembled), 1u);
  EXPECT_EQ(wdelta(b0, *after, WorkerCounter::RxDecapsulated), 1u);
  EXPECT_EQ(after->verdict[OV2_VERDICT_ACCEPT] - b0.verdict[OV2_VERDICT_ACCEPT], 1u) << dump(*b_.dp);
}

TEST_F(DataplaneFragmentE2E, TransportIpv4WithoutDfIsFragmentedAfterEspAndThePeerReassemblesIt) {
  // No PMTU discovery on either host: TCP goes without DF too.  Routes into
  // ov2 without mtu: the host cuts a 3028-byte echo into 1500 + 1500 + 68 for
  // ov2; the worker reassembles it (transport SAs carry whole datagrams),
  // protects it (3068 bytes with AES-GCM-128) and sends it in 3 fragments;
  // the peer reassembles, opens, and gives the 3028-byte echo to its host in
  // fragments that fit ov2 (1480 bytes with the shim).
  for (Endpoint* ep : {&a_, &b_}) must(ep->ns->exec("sysctl -qw net.ipv4.ip_no_pmtu_disc=1"));
  setup_transport(false, 0);
  ASSERT_TRUE(warm_up(a_, b_.wire_ip));
  start_capture();
  const DataplaneCounters a0 = a_.dp->counters(), b0 = b_.dp->counters();
  EXPECT_EQ(sh(a_.ns->exec("ping -c 3 -i 0.2 -W 2 -q -M dont -s 3000 " + b_.wire_ip + " >/dev/null")), 0)
      << "a: " << dump(*a_.dp) << "\nb: " << dump(*b_.dp);
  const DataplaneCounters a1 = a_.dp->counters(), b1 = b_.dp->counters();
  EXPECT_EQ(wdelta(a0, a1, WorkerCounter::TxHostFragments), 9u) << dump(*a_.dp);
  EXPECT_EQ(wdelta(a0, a1, WorkerCounter::TxReassembled), 3u) << dump(*a_.dp);
  EXPECT_EQ(wdelta(a0, a1, WorkerCounter::TxFragmented), 3u) << dump(*a_.dp);
  EXPECT_EQ(wdelta(a0, a1, WorkerCounter::TxEncapsulated), 9u) << "three ESP fragments per request";
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxFragments), 9u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxReassembled), 3u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxDecapsulated), 3u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxFragmentedForHost), 3u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::TxFragmented), 3u) << "the replies: " << dump(*b_.dp);
  EXPECT_EQ(wdelta(a0, a1, WorkerCounter::RxReassembled), 3u) << dump(*a_.dp);
  EXPECT_EQ(b1.wire[OV2_WIRE_REDIRECT_FRAGMENT] - b0.wire[OV2_WIRE_REDIRECT_FRAGMENT], 9u);
  EXPECT_TRUE(tcp_transfer(a_.wire_ip, b_.wire_ip, 256 << 10)) << e2e::read_file(tmp_.file("tcp-client.log"));
  stop_capture();
  const DataplaneCounters b2 = b_.dp->counters();
  EXPECT_GE(wdelta(b1, b2, WorkerCounter::RxReassembled), 100u) << "full-size TCP segments came in fragments";
  for (WorkerCounter c :
       {WorkerCounter::RxReasmTimeout, WorkerCounter::RxReasmOverlap, WorkerCounter::RxReasmTooBig,
        WorkerCounter::RxReasmTableFull, WorkerCounter::RxReasmMalformed, WorkerCounter::TxReasmFailed}) {
    EXPECT_EQ(b2.worker_count(c), 0u) << worker_counter_name(c);
    EXPECT_EQ(a_.dp->counters().worker_count(c), 0u) << worker_counter_name(c);
  }
  EXPECT_EQ(a_.dp->counters().worker_count(WorkerCounter::TxTooBig), 0u) << dump(*a_.dp);
  // tshark: ESP fragments on the wire, none above the MTU; every ESP datagram
  // it reassembled opens with a good ICV.
  const EspTally t = tally_esp("0x00003003");
  EXPECT_GE(t.fragments, 18u) << tshark_raw_;
  EXPECT_GE(t.good, 3u) << tshark_raw_;
  EXPECT_EQ(t.bad, 0u) << tshark_raw_;
}

// A transport-in-tunnel bundle carries IPv4 without DF above the path MTU as
// Linux XFRM does: the datagram whole (the host's fragments for ov2
// reassembled first), both layers of ESP over it, then the outer ESP packet
// in fragments; the peer reassembles them, opens both layers and gives the
// datagram to its host.  (Until 2026-12-03 these were dropped: tx-too-big.)
// 3028 bytes fit a frame; 6028 go through the large buffers on both sides.
TEST_F(DataplaneFragmentE2E, BundleIpv4WithoutDfIsProtectedWholeThenFragmentedAndOpenedByBothSas) {
  for (Endpoint* ep : {&a_, &b_}) must(ep->ns->exec("sysctl -qw net.ipv4.ip_no_pmtu_disc=1"));
  route_mtu_ = false;
  start_dataplanes();
  const auto [ab_tr, ba_tr] = setup_bundle({5, 6, 7, 8});
  ASSERT_TRUE(warm_up(a_, b_.inner_ip)) << "no ping answer through the bundle";
  start_capture();
  const DataplaneCounters a0 = a_.dp->counters(), b0 = b_.dp->counters();
  const uint64_t tr0 = b_.dp->sa_counters(ab_tr.in_handle).packets, tun0 = b_.dp->sa_counters(ab_.in_handle).packets;
  EXPECT_EQ(sh(a_.ns->exec("ping -c 3 -i 0.2 -W 2 -q -M dont -s 3000 " + b_.inner_ip + " >/dev/null")), 0)
      << "a: " << dump(*a_.dp) << "\nb: " << dump(*b_.dp);
  EXPECT_EQ(sh(a_.ns->exec("ping -c 1 -W 3 -q -M dont -s 6000 " + b_.inner_ip + " >/dev/null")), 0)
      << "a: " << dump(*a_.dp) << "\nb: " << dump(*b_.dp);
  stop_capture();
  const DataplaneCounters a1 = a_.dp->counters(), b1 = b_.dp->counters();
  EXPECT_EQ(b_.dp->sa_counters(ab_tr.in_handle).packets - tr0, 4u) << "the transport SA opened each datagram whole";
  EXPECT_EQ(b_.dp->sa_counters(ab_.in_handle).packets - tun0, 4u) << "the tunnel SA opened each datagram whole";
  // Each request and each reply: the host's fragments reassembled, protected, fragmented after ESP.
  EXPECT_EQ(wdelta(a0, a1, WorkerCounter::TxReassembled), 4u) << dump(*a_.dp);
  EXPECT_EQ(wdelta(a0, a1, WorkerCounter::TxFragmented), 4u) << dump(*a_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::TxFragmented), 4u) << "the replies: " << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxFragmentedForHost), 4u) << dump(*b_.dp);
  for (WorkerCounter c : {WorkerCounter::TxTooBig, WorkerCounter::TxEncapFailed, WorkerCounter::TxReasmFailed,
                          WorkerCounter::RxReasmTooBig, WorkerCounter::RxInnerTooBig}) {
    EXPECT_EQ(wdelta(a0, a1, c), 0u) << worker_counter_name(c) << ": " << dump(*a_.dp);
    EXPECT_EQ(wdelta(b0, b1, c), 0u) << worker_counter_name(c) << ": " << dump(*b_.dp);
  }
  // tshark: only outer (tunnel) ESP fragments on the wire, none above the MTU;
  // every datagram it reassembled opens with a good ICV.
  const EspTally t = tally_esp("0x00006001");
  EXPECT_GE(t.fragments, 2u * (3 * 3 + 5)) << tshark_raw_;
  EXPECT_GE(t.good, 4u) << tshark_raw_;
  EXPECT_EQ(t.bad, 0u) << tshark_raw_;
}

// The same with datagrams bigger than a UMEM frame, up to 65 028 bytes:
// each side reassembles its host's fragments in a large buffer, protects the
// datagram there and sends it in fragments; the peer reassembles it in a
// large buffer, opens it and gives it to its host in fragments.
TEST_F(DataplaneFragmentE2E, TransportDatagramsBiggerThanAFrameCrossBothWaysAsEspFragments) {
  for (Endpoint* ep : {&a_, &b_}) must(ep->ns->exec("sysctl -qw net.ipv4.ip_no_pmtu_disc=1"));
  setup_transport(false, 0);
  ASSERT_TRUE(warm_up(a_, b_.wire_ip));
  const DataplaneCounters a0 = a_.dp->counters(), b0 = b_.dp->counters();
  EXPECT_EQ(sh(a_.ns->exec("ping -c 2 -i 0.3 -W 3 -q -M dont -s 6000 " + b_.wire_ip + " >/dev/null")), 0)
      << "a: " << dump(*a_.dp) << "\nb: " << dump(*b_.dp);
  EXPECT_EQ(sh(a_.ns->exec("ping -c 1 -W 3 -q -M dont -s 65000 " + b_.wire_ip + " >/dev/null")), 0)
      << "a: " << dump(*a_.dp) << "\nb: " << dump(*b_.dp);
  const DataplaneCounters a1 = a_.dp->counters(), b1 = b_.dp->counters();
  // 6028 bytes: 5 host fragments for ov2's 1500, 5 ESP fragments; 65028: 44 and 44.
  EXPECT_EQ(wdelta(a0, a1, WorkerCounter::TxHostFragments), 54u) << dump(*a_.dp);
  EXPECT_EQ(wdelta(a0, a1, WorkerCounter::TxReassembled), 3u) << dump(*a_.dp);
  EXPECT_EQ(wdelta(a0, a1, WorkerCounter::TxFragmented), 3u) << dump(*a_.dp);
  EXPECT_EQ(wdelta(a0, a1, WorkerCounter::TxEncapsulated), 54u) << dump(*a_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxFragments), 54u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxReasmLarge), 3u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxDecapsulated), 3u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxFragmentedForHost), 3u) << dump(*b_.dp);
  // The replies the same way back.
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::TxReassembled), 3u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(a0, a1, WorkerCounter::RxReasmLarge), 3u) << dump(*a_.dp);
  EXPECT_EQ(wdelta(a0, a1, WorkerCounter::RxDecapsulated), 3u) << dump(*a_.dp);
  for (WorkerCounter c :
       {WorkerCounter::TxReasmFailed, WorkerCounter::TxTooBig, WorkerCounter::TxEncapFailed,
        WorkerCounter::RxReasmTooBig, WorkerCounter::RxReasmLargeBusy, WorkerCounter::RxInnerTooBig}) {
    EXPECT_EQ(wdelta(a0, a1, c), 0u) << worker_counter_name(c) << ": " << dump(*a_.dp);
    EXPECT_EQ(wdelta(b0, b1, c), 0u) << worker_counter_name(c) << ": " << dump(*b_.dp);
  }
}

// A stream of them: 300 UDP datagrams of 8000 bytes, paced, a -> b through
// the transport SAs (6 host fragments and 6 ESP fragments each): a socket on
// b receives every one byte for byte, and no worker dropped anything.
TEST_F(DataplaneFragmentE2E, StreamOfBigTransportDatagramsArrivesWholeWithoutAWorkerDrop) {
  for (Endpoint* ep : {&a_, &b_}) must(ep->ns->exec("sysctl -qw net.ipv4.ip_no_pmtu_disc=1"));
  setup_transport(false, 0);
  ASSERT_TRUE(warm_up(a_, b_.wire_ip));
  constexpr int kCount = 300;
  const std::string receiver = tmp_.file("udp_receiver.py"), sender = tmp_.file("udp_sender.py");
  {
    std::ofstream f(receiver);
    f << "import socket\n"
         "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         "s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)\n"
         "s.bind(('"
      << b_.wire_ip << "', 9005))\n"
      << "want = bytes(i % 251 for i in range(8000))\n"
         "s.settimeout(5)\n"
         "ok = bad = 0\n"
         "try:\n"
         "    while ok + bad < "
      << kCount << ":\n"
      << "        d = s.recv(65535)\n"
         "        ok, bad = (ok + 1, bad) if d == want else (ok, bad + 1)\n"
         "except socket.timeout:\n"
         "    pass\n"
         "print(ok, bad, flush=True)\n";
  }
  {
    std::ofstream f(sender);
    f << "import socket, time\n"
         "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         "d = bytes(i % 251 for i in range(8000))\n"
         "for _ in range("
      << kCount << "):\n"
      << "    s.sendto(d, ('" << b_.wire_ip << "', 9005))\n"
      << "    time.sleep(0.004)\n";
  }
  Child rx(b_.ns->exec("/usr/bin/python3 " + receiver), tmp_.file("udp_receiver.log"));
  ASSERT_TRUE(e2e::wait_for([&] { return sh_out(b_.ns->exec("ss -lun")).find(":9005 ") != std::string::npos; }, 5000));
  const DataplaneCounters a0 = a_.dp->counters(), b0 = b_.dp->counters();
  EXPECT_EQ(sh(a_.ns->exec("/usr/bin/python3 " + sender)), 0);
  ASSERT_TRUE(e2e::wait_for(
      [&] { return e2e::read_file(tmp_.file("udp_receiver.log")).find('\n') != std::string::npos; }, 10000));
  const DataplaneCounters a1 = a_.dp->counters(), b1 = b_.dp->counters();
  EXPECT_EQ(e2e::read_file(tmp_.file("udp_receiver.log")), std::to_string(kCount) + " 0\n")
      << "a: " << dump(*a_.dp) << "\nb: " << dump(*b_.dp);
  EXPECT_EQ(wdelta(a0, a1, WorkerCounter::TxReassembled), uint64_t{kCount}) << dump(*a_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxReasmLarge), uint64_t{kCount}) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxDecapsulated), uint64_t{kCount}) << dump(*b_.dp);
  for (WorkerCounter c : {WorkerCounter::TxReasmFailed, WorkerCounter::TxTooBig, WorkerCounter::TxEncapFailed})
    EXPECT_EQ(wdelta(a0, a1, c), 0u) << worker_counter_name(c) << ": " << dump(*a_.dp);
  for (WorkerCounter c : {WorkerCounter::RxReasmTooBig, WorkerCounter::RxReasmLargeBusy, WorkerCounter::RxInnerTooBig,
                          WorkerCounter::RxReasmTimeout, WorkerCounter::RxCryptoFailed})
    EXPECT_EQ(wdelta(b0, b1, c), 0u) << worker_counter_name(c) << ": " << dump(*b_.dp);
}

TEST_F(DataplaneFragmentE2E, TunnelEspArrivingInOuterFragmentsIsReassembledOpenedAndAnswered) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  std::vector<std::string> frames;
  DataplaneCounters b1;
  ASSERT_NO_FATAL_FAILURE(expect_fragments_opened_and_answered(1000, 0x5151, false, &frames, &b1));
  // The same datagram again is a replay: reassembled, then refused by the window.
  inject(*a_.ns, "wire", frames);
  ASSERT_TRUE(e2e::wait_for([&] { return wdelta(b1, b_.dp->counters(), WorkerCounter::RxReassembled) >= 1; }, 3000));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const DataplaneCounters b2 = b_.dp->counters();
  EXPECT_EQ(wdelta(b1, b2, WorkerCounter::RxDecapsulated), 0u);
  EXPECT_EQ(wdelta(b1, b2, WorkerCounter::RxCryptoFailed), 1u) << dump(*b_.dp);
}

TEST_F(DataplaneFragmentE2E, OverlappingOversizedAndUnfinishedFragmentsAreDroppedAndCounted) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  const DataplaneCounters b0 = b_.dp->counters();
  const std::vector<std::string> overlap = scapy_esp_fragments("overlap", 2000, 0x6161);
  ASSERT_EQ(overlap.size(), 4u) << e2e::read_file(tmp_.file("fragments.err"));
  inject(*a_.ns, "wire", overlap);
  inject(*a_.ns, "wire", scapy_esp_fragments("beyond", 2001, 0x6262));
  inject(*a_.ns, "wire", scapy_esp_fragments("unended", 2002, 0x6363));
  DataplaneCounters b1;
  ASSERT_NO_FATAL_FAILURE(b1 = counters_after_fragments(b0, 6));
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxReasmOverlap), 1u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxReasmTooBig), 1u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxReassembled), 0u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxDecapsulated), 0u);
  // The fourth fragment of the overlap datagram started a new entry that
  // never completes, like the unfinished one: both wait for the timeout.
  // And the worker still works: a good datagram after all that.
  inject(*a_.ns, "wire", scapy_esp_fragments("good", 2003, 0x6464));
  ASSERT_TRUE(e2e::wait_for([&] { return wdelta(b1, b_.dp->counters(), WorkerCounter::RxDecapsulated) >= 1; }, 3000))
      << dump(*b_.dp);
  EXPECT_EQ(wdelta(b1, b_.dp->counters(), WorkerCounter::RxReassembled), 1u);
}

TEST_F(DataplaneFragmentE2E, Ipv6OuterEspFragmentsAreReassembledAndAnyOverlapDropsTheDatagram) {
  setup_tunnel(true);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  std::vector<std::string> frames;
  DataplaneCounters b1;
  ASSERT_NO_FATAL_FAILURE(expect_fragments_opened_and_answered(3000, 0x71717171, true, &frames, &b1));
  // RFC 5722: a fragment overlapping another by 8 bytes, same bytes or not, drops the datagram.
  const std::vector<std::string> overlap = scapy_esp_fragments("overlap", 3001, 0x72727272, true);
  ASSERT_EQ(overlap.size(), 4u) << e2e::read_file(tmp_.file("fragments.err"));
  inject(*a_.ns, "wire", overlap);
  DataplaneCounters b2;
  ASSERT_NO_FATAL_FAILURE(b2 = counters_after_fragments(b1, 4));
  EXPECT_EQ(wdelta(b1, b2, WorkerCounter::RxReasmOverlap), 1u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b1, b2, WorkerCounter::RxReassembled), 0u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b1, b2, WorkerCounter::RxDecapsulated), 0u);
}

// RFC 8200 §4.5: Hop-by-Hop, Destination Options and Routing headers before
// the Fragment header ride in every fragment; ov2_wire, the reassembly and
// the SA lookup walk them, and the datagram keeps them up to ESP.  (Before,
// only a Fragment header right after the fixed header was reassembled:
// rx-reasm-malformed.)
TEST_F(DataplaneFragmentE2E, Ipv6EspFragmentsBehindExtensionHeadersAreReassembledAndOpened) {
  setup_tunnel(true);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  std::vector<std::string> frames;
  DataplaneCounters b1;
  ASSERT_NO_FATAL_FAILURE(expect_fragments_opened_and_answered(6000, 0x61616161, true, &frames, &b1,
                                                               ", \"v6_ext\": [\"hop\", \"dest\", \"routing\"]"));
  EXPECT_EQ(static_cast<uint8_t>(frames[0][14 + 6]), 0) << "the fragments start with a Hop-by-Hop header";
  EXPECT_EQ(wc(*b_.dp, WorkerCounter::RxReasmMalformed) + wc(*b_.dp, WorkerCounter::RxReasmBadChain), 0u);
  // Seven Destination Options headers before the Fragment header: more than
  // anything walks.  ov2_wire leaves them to the stack (pass-ext-too-deep).
  const std::string seven = ", \"v6_ext\": [\"dest\", \"dest\", \"dest\", \"dest\", \"dest\", \"dest\", \"dest\"]";
  const std::vector<std::string> deep = scapy_esp_fragments("good", 6001, 0x62626262, true, false, seven);
  ASSERT_EQ(deep.size(), 3u) << e2e::read_file(tmp_.file("fragments.err"));
  inject(*a_.ns, "wire", deep);
  ASSERT_TRUE(e2e::wait_for(
      [&] { return b_.dp->counters().wire[OV2_WIRE_PASS_EXT_TOO_DEEP] - b1.wire[OV2_WIRE_PASS_EXT_TOO_DEEP] >= 3; },
      3000))
      << dump(*b_.dp);
  EXPECT_EQ(wdelta(b1, b_.dp->counters(), WorkerCounter::RxFragments), 0u) << dump(*b_.dp);
}

TEST_F(DataplaneFragmentE2E, NattEspInUdpFragmentsAreOpenedAndOtherUdpToThatAddressArrivesAsFromTheWire) {
  setup_tunnel(false, 0, true);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  // What an IKE daemon on b would see: a socket on UDP 4500.  Debian's
  // default loose reverse-path filter everywhere: the datagram has the peer's
  // wire address as its source, so it must arrive as received on the wire
  // (ov2_verdict's redirect-wire-ingress); up through ov2, which has no IPv4
  // address, the filter would drop it (IPReversePathFilter).
  must(
      b_.ns->exec("sysctl -qw net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.default.rp_filter=2 "
                  "net.ipv4.conf.ov2.rp_filter=2 net.ipv4.conf.wire.rp_filter=2"));
  // Absolute value (-a), history file left alone (-s): it is per user, not per namespace.
  const auto rp_filter_drops = [&] {
    const std::string out = sh_out(b_.ns->exec("nstat -asz TcpExtIPReversePathFilter"));
    const size_t at = out.find("TcpExtIPReversePathFilter");
    return at == std::string::npos ? uint64_t{0} : std::stoull(out.substr(at + sizeof("TcpExtIPReversePathFilter")));
  };
  const std::string listener = tmp_.file("ike_listener.py");
  {
    std::ofstream f(listener);
    f << "import socket\n"
         "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         "s.bind(('0.0.0.0', 4500))\n"
         "s.settimeout(15)\n"
         "d, a = s.recvfrom(65535)\n"
         "print(len(d), a[0], d[:4].hex(), flush=True)\n";
  }
  Child ike(b_.ns->exec("/usr/bin/python3 " + listener), tmp_.file("ike.log"));
  ASSERT_TRUE(e2e::wait_for([&] { return sh(b_.ns->exec("ss -lun | grep -q ':4500 '")) == 0; }, 5000));
  const DataplaneCounters b0 = b_.dp->counters();
  const std::vector<std::string> esp = scapy_esp_fragments("good", 4000, 0x8181, false, true);
  ASSERT_EQ(esp.size(), 3u) << e2e::read_file(tmp_.file("fragments.err"));
  inject(*a_.ns, "wire", esp);
  ASSERT_TRUE(e2e::wait_for([&] { return wdelta(b0, b_.dp->counters(), WorkerCounter::TxEncapsulated) >= 1; }, 3000))
      << "b answered the echo request through its SA: " << dump(*b_.dp);
  const DataplaneCounters b1 = b_.dp->counters();
  EXPECT_EQ(b1.wire[OV2_WIRE_REDIRECT_FRAGMENT] - b0.wire[OV2_WIRE_REDIRECT_FRAGMENT], 3u);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxReassembled), 1u);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxDecapsulated), 1u);
  // A fragmented UDP 4500 datagram with the non-ESP marker (a big IKE message).
  const std::vector<std::string> ike_frames = scapy_esp_fragments("ike", 4001, 0x8282, false, true);
  ASSERT_EQ(ike_frames.size(), 3u) << e2e::read_file(tmp_.file("fragments.err"));
  const uint64_t rpf0 = rp_filter_drops();
  inject(*a_.ns, "wire", ike_frames);
  ASSERT_TRUE(e2e::wait_for([&] { return e2e::read_file(tmp_.file("ike.log")).find(' ') != std::string::npos; }, 5000))
      << "the IKE datagram did not reach b's socket: " << dump(*b_.dp)
      << sh_out(b_.ns->exec("nstat -az 2>&1 | grep -E 'Udp|ReversePath|Martian' | grep -v ' 0 '"));
  EXPECT_EQ(e2e::read_file(tmp_.file("ike.log")), "1304 " + a_.wire_ip + " 00000000\n");
  const DataplaneCounters b2 = b_.dp->counters();
  EXPECT_EQ(wdelta(b1, b2, WorkerCounter::RxReassembled), 1u);
  EXPECT_EQ(wdelta(b1, b2, WorkerCounter::RxReasmPassed), 1u);
  EXPECT_EQ(wdelta(b1, b2, WorkerCounter::RxDecapsulated), 0u);
  EXPECT_EQ(b2.verdict[OV2_VERDICT_REDIRECT_WIRE_INGRESS] - b1.verdict[OV2_VERDICT_REDIRECT_WIRE_INGRESS], 1u)
      << dump(*b_.dp);
  EXPECT_EQ(b2.verdict[OV2_VERDICT_ACCEPT_PLAIN] - b1.verdict[OV2_VERDICT_ACCEPT_PLAIN], 0u) << dump(*b_.dp);
  EXPECT_EQ(rp_filter_drops(), rpf0) << "the reverse-path filter dropped something";
}

// ---------------------------------------------------------------------------
// ESP datagrams bigger than a UMEM frame -- what a peer with a big tunnel MTU
// (Linux XFRM with a 9000-byte inner MTU) sends over a 1500-byte wire:
// reassembled in the worker's large buffer, opened there, the inner packet
// copied into frames for the host, in IPv4 fragments that fit ov2.

TEST_F(DataplaneFragmentE2E, EspDatagramsBiggerThanAFrameAreOpenedAndTheirInnerPacketsReachTheSocketWhole) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  std::unique_ptr<Child> listener;
  ASSERT_NO_FATAL_FAILURE(listener = udp_pattern_listener(9001, 2));
  // A 6028-byte UDP datagram in ESP (about 6080 bytes) in 5 outer fragments
  // of 1480 bytes of payload, last first; then the biggest there is: 65428
  // bytes of inner packet, 65480 bytes of ESP, 45 fragments.
  Fragments spec = udp_datagram(9001, 6000, 5000, 0x9191);
  const std::vector<std::string> six = scapy_esp_fragments(spec);
  ASSERT_EQ(six.size(), 5u) << e2e::read_file(tmp_.file("fragments.err"));
  spec.payload = 65400;
  spec.seq = 5001;
  spec.ip_id = 0x9292;
  const std::vector<std::string> biggest = scapy_esp_fragments(spec);
  ASSERT_EQ(biggest.size(), 45u) << e2e::read_file(tmp_.file("fragments.err"));
  const DataplaneCounters b0 = b_.dp->counters();
  inject(*a_.ns, "wire", six);
  ASSERT_EQ(udp_log(1), "6000 ok\n") << dump(*b_.dp);
  inject(*a_.ns, "wire", biggest);
  EXPECT_EQ(udp_log(2), "6000 ok\n65400 ok\n") << dump(*b_.dp);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const DataplaneCounters b1 = b_.dp->counters();
  EXPECT_EQ(b1.wire[OV2_WIRE_REDIRECT_FRAGMENT] - b0.wire[OV2_WIRE_REDIRECT_FRAGMENT], 50u);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxFragments), 50u);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxReassembled), 2u);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxReasmLarge), 2u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxDecapsulated), 2u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxFragmentedForHost), 2u);
  // Up to ov2 in pieces of 1456 payload bytes (ov2 takes wire MTU - 20 with
  // the shim): 6008 -> 5, 65408 -> 45; each accepted with CryptoDone.
  EXPECT_EQ(b1.verdict[OV2_VERDICT_ACCEPT] - b0.verdict[OV2_VERDICT_ACCEPT], 50u) << dump(*b_.dp);
  for (WorkerCounter c : {WorkerCounter::RxReasmTooBig, WorkerCounter::RxReasmLargeBusy, WorkerCounter::RxInnerTooBig,
                          WorkerCounter::RxCryptoFailed, WorkerCounter::RxMalformed, WorkerCounter::RxReasmMalformed})
    EXPECT_EQ(wdelta(b0, b1, c), 0u) << worker_counter_name(c) << ": " << dump(*b_.dp);
  EXPECT_EQ(b_.dp->counters().worker_count(WorkerCounter::RxReasmTooBig), 0u);
  const auto opened = [&] { return b_.dp->sa_counters(ab_.in_handle).by_reason[static_cast<size_t>(esp::Reason::Ok)]; };
  const uint64_t opened1 = opened();

  // Inner IPv4 with DF, and inner IPv6: bigger than ov2 takes and not to be
  // fragmented on the way: opened, then dropped and counted.
  spec.payload = 6000;
  spec.df = true;
  spec.seq = 5002;
  spec.ip_id = 0x9393;
  inject(*a_.ns, "wire", scapy_esp_fragments(spec));
  spec.df = false;
  spec.inner = "udp6";
  spec.seq = 5003;
  spec.ip_id = 0x9494;
  inject(*a_.ns, "wire", scapy_esp_fragments(spec));
  DataplaneCounters b2;
  ASSERT_NO_FATAL_FAILURE(b2 = counters_after_fragments(b1, 10));
  EXPECT_EQ(wdelta(b1, b2, WorkerCounter::RxReasmLarge), 2u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b1, b2, WorkerCounter::RxInnerTooBig), 2u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b1, b2, WorkerCounter::RxDecapsulated), 0u);
  EXPECT_EQ(b2.verdict[OV2_VERDICT_ACCEPT] - b1.verdict[OV2_VERDICT_ACCEPT], 0u);
  EXPECT_EQ(opened() - opened1, 2u) << "both were authenticated and opened before they were dropped";
}

TEST_F(DataplaneFragmentE2E, UnfinishedBigDatagramsHoldingEveryLargeBufferMakeTheNextOneLargeBusy) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  const DataplaneCounters b0 = b_.dp->counters();
  // One fragment at offset 8000 each: 8 datagrams (Worker::Config
  // reassembly_large_entries) take the large buffers for the 30 s timeout;
  // the ninth finds none.
  Fragments far;
  far.kind = "far";
  far.seq = 6000;
  far.ip_id = 0xa000;
  far.count = 9;
  const std::vector<std::string> frames = scapy_esp_fragments(far);
  ASSERT_EQ(frames.size(), 9u) << e2e::read_file(tmp_.file("fragments.err"));
  inject(*a_.ns, "wire", frames);
  DataplaneCounters b1;
  ASSERT_NO_FATAL_FAILURE(b1 = counters_after_fragments(b0, 9));
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxReasmLargeBusy), 1u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxReasmTooBig), 0u);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxReassembled), 0u);
  // A datagram that fits a frame needs no large buffer: it still opens.
  inject(*a_.ns, "wire", scapy_esp_fragments("good", 6100, 0xa100));
  ASSERT_TRUE(e2e::wait_for([&] { return wdelta(b1, b_.dp->counters(), WorkerCounter::RxDecapsulated) >= 1; }, 3000))
      << dump(*b_.dp);
  EXPECT_EQ(wdelta(b1, b_.dp->counters(), WorkerCounter::RxReasmLargeBusy), 0u);
}

class DataplaneFragmentE2ETwoQueues : public DataplaneFragmentE2E {
 protected:
  uint32_t queues() const override { return 2; }
  std::vector<int> cpus() const override { return {0, 1}; }
};

// The a->b SA is in slot 2: b's worker 0 owns it.  Every fragment arrives on
// b's queue 1 (injected from CPU 1 on the bridge's port): worker 1
// reassembles, finds the SA another worker's, and hands the whole datagram
// over in consecutive handoff slots; worker 0 opens it (a datagram bigger
// than a frame in its own large buffer).
TEST_F(DataplaneFragmentE2ETwoQueues, ReassembledDatagramsAreHandedToTheSaOwnerWholeAndOpenedThere) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip)) << dump(*b_.dp);
  std::unique_ptr<Child> listener;
  ASSERT_NO_FATAL_FAILURE(listener = udp_pattern_listener(9003, 2));
  // 2500 bytes: fits a frame, not a handoff slot; 6000: bigger than a frame.
  const std::vector<std::string> small = scapy_esp_fragments(udp_datagram(9003, 2500, 7000, 0xb1b1));
  ASSERT_EQ(small.size(), 2u) << e2e::read_file(tmp_.file("fragments.err"));
  const std::vector<std::string> big = scapy_esp_fragments(udp_datagram(9003, 6000, 7001, 0xb2b2));
  ASSERT_EQ(big.size(), 5u);
  const DataplaneCounters b0 = b_.dp->counters();
  for (const auto* frames : {&small, &big})
    for (const std::string& f : *frames) ASSERT_NO_FATAL_FAILURE(inject_from_cpu(*mid_, "midb", f, 1));
  const std::string log = udp_log(2);
  EXPECT_NE(log.find("2500 ok\n"), std::string::npos) << log << dump(*b_.dp);
  EXPECT_NE(log.find("6000 ok\n"), std::string::npos) << log << dump(*b_.dp);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const DataplaneCounters b1 = b_.dp->counters();
  EXPECT_EQ(delta(b0, b1, 1, WorkerCounter::RxFragments), 7u) << dump(*b_.dp);
  EXPECT_EQ(delta(b0, b1, 1, WorkerCounter::RxReassembled), 2u);
  EXPECT_EQ(delta(b0, b1, 1, WorkerCounter::RxReasmLarge), 1u);
  EXPECT_EQ(delta(b0, b1, 1, WorkerCounter::RxHandedOff), 2u) << dump(*b_.dp);
  EXPECT_EQ(delta(b0, b1, 0, WorkerCounter::RxHandoffReceived), 2u);
  EXPECT_EQ(delta(b0, b1, 0, WorkerCounter::RxDecapsulated), 2u) << dump(*b_.dp);
  EXPECT_EQ(delta(b0, b1, 0, WorkerCounter::RxFragmentedForHost), 2u);
  EXPECT_EQ(delta(b0, b1, 1, WorkerCounter::RxDecapsulated), 0u);
  for (WorkerCounter c : {WorkerCounter::RxHandoffFull, WorkerCounter::RxForeignQueue, WorkerCounter::RxMalformed,
                          WorkerCounter::RxReasmTooBig, WorkerCounter::RxInnerTooBig})
    EXPECT_EQ(delta(b0, b1, c), 0u) << worker_counter_name(c) << ": " << dump(*b_.dp);
}

// A counter of the Ip: line of /proc/net/snmp in `ns` (the namespace's own).
uint64_t snmp_ip(const Netns& ns, const std::string& name) {
  std::istringstream in(sh_out(ns.exec("cat /proc/net/snmp")));
  std::string names, values;
  while (std::getline(in, names) && names.rfind("Ip:", 0) != 0) {
  }
  std::getline(in, values);
  std::istringstream n(names), v(values);
  std::string key, value;
  while (n >> key && v >> value)
    if (key == name) return std::stoull(value);
  ADD_FAILURE() << "no Ip " << name << " in /proc/net/snmp of " << ns.name();
  return 0;
}

// b is a router on the way: ESP between a and a host c behind b, in
// fragments, arrives on b's wire.  b has an inbound ESP SA for its own
// address only, so ov2_wire leaves these fragments to b's stack
// (pass-fragment-no-sa), which forwards them; c reassembles the ESP datagram
// byte for byte.  (Before, every ESP fragment went to b's worker, which
// reassembled it and dropped it as rx-no-sa.)
TEST_F(DataplaneFragmentE2E, EspFragmentsBetweenOtherHostsPassToTheStackAndAreForwarded) {
  setup_tunnel(false);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  Netns c("ov2t" + std::to_string(getpid()) + "c");
  const std::string c_ip = "203.0.113.2";
  must("ip link add side netns " + b_.ns->name() + " type veth peer name side netns " + c.name());
  must("ip -n " + b_.ns->name() + " addr add 203.0.113.1/24 dev side");
  must("ip -n " + c.name() + " addr add " + c_ip + "/24 dev side");
  must("ip -n " + b_.ns->name() + " link set side up");
  must("ip -n " + c.name() + " link set side up");
  must("ip -n " + c.name() + " link set lo up");
  must("ip -n " + c.name() + " route add default via 203.0.113.1");
  must(b_.ns->exec("sysctl -qw net.ipv4.ip_forward=1"));
  ASSERT_EQ(sh(b_.ns->exec("ping -c 1 -W 2 -q " + c_ip + " >/dev/null")), 0) << "b reaches c";
  // c's view of ESP: a raw socket gets each reassembled datagram whole.
  const std::string listener = tmp_.file("esp_listener.py");
  {
    std::ofstream f(listener);
    f << "import socket\n"
         "s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)\n"
         "s.settimeout(15)\n"
         "print('ready', flush=True)\n"
         "d = s.recv(65535)\n"
         "print(len(d), d[20:28].hex(), flush=True)\n";
  }
  Child esp_listener(c.exec("/usr/bin/python3 " + listener), tmp_.file("esp_listener.log"));
  const std::string esp_log = tmp_.file("esp_listener.log");
  ASSERT_TRUE(e2e::wait_for([&] { return e2e::read_file(esp_log) == "ready\n"; }, 5000)) << e2e::read_file(esp_log);
  const std::vector<std::string> frames =
      scapy_esp_fragments("good", 5000, 0x9191, false, false, ", \"outer_dst\": \"" + c_ip + "\"");
  ASSERT_EQ(frames.size(), 3u) << e2e::read_file(tmp_.file("fragments.err"));
  size_t datagram = 20;  // the IPv4 header, then every fragment's payload
  for (const std::string& f : frames)
    datagram += (static_cast<uint8_t>(f[16]) << 8 | static_cast<uint8_t>(f[17])) - (f[14] & 0x0f) * 4;
  const DataplaneCounters b0 = b_.dp->counters();
  const uint64_t c_reasm0 = snmp_ip(c, "ReasmOKs");
  inject(*a_.ns, "wire", frames);
  ASSERT_TRUE(e2e::wait_for([&] { return e2e::read_file(esp_log).find(' ') != std::string::npos; }, 5000))
      << "the ESP datagram did not reach c: b " << dump(*b_.dp)
      << "\nb: " << sh_out(b_.ns->exec("nstat -az 2>&1 | grep -E 'IpExtInNoRoutes|IpReasm|IpForw|IpInDiscards' "));
  std::ostringstream expected;
  expected << "ready\n"
           << datagram << " " << std::hex << std::setfill('0') << std::setw(8) << ab_.out.spi << std::setw(8) << 5000
           << "\n";
  EXPECT_EQ(e2e::read_file(esp_log), expected.str());
  EXPECT_EQ(snmp_ip(c, "ReasmOKs") - c_reasm0, 1u) << "c reassembled the datagram from b's forwarded fragments";
  const DataplaneCounters b1 = b_.dp->counters();
  EXPECT_EQ(b1.wire[OV2_WIRE_PASS_FRAGMENT_NO_SA] - b0.wire[OV2_WIRE_PASS_FRAGMENT_NO_SA], 3u) << dump(*b_.dp);
  EXPECT_EQ(b1.wire[OV2_WIRE_REDIRECT_FRAGMENT] - b0.wire[OV2_WIRE_REDIRECT_FRAGMENT], 0u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxFragments), 0u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxNoSa), 0u) << dump(*b_.dp);
  // b's own SA address still gets its fragments reassembled by the worker.
  std::vector<std::string> own;
  DataplaneCounters b2;
  ASSERT_NO_FATAL_FAILURE(expect_fragments_opened_and_answered(5001, 0x9292, false, &own, &b2));
}

// The IKE datagram's fragments came 802.1Q-tagged (VID 100): reassembled by
// the worker, it re-enters the wire with the tag put back (the worker keeps
// the TCI, ov2_verdict pushes it before the redirect), so it arrives for the
// wire's VLAN device, not untagged on the wire itself.  This kernel has no
// 802.1Q devices (CONFIG_VLAN_8021Q unset): what b's wire receives is checked
// on a capture there, where the fragments themselves never show (XDP sends
// them to the worker) and the redirected datagram does, with its tag.
TEST_F(DataplaneFragmentE2E, TaggedIkeFragmentsReenterTheWireWithTheirVlanTag) {
  setup_tunnel(false, 0, true);
  ASSERT_TRUE(warm_up(a_, b_.inner_ip));
  // The bridge in the middle takes the tag off into the skb; the port to b
  // then writes it back into the frame, so b's XDP sees it as a NIC would
  // without VLAN offload.
  must(mid_->exec("ethtool -K midb txvlan off >/dev/null"));
  pcap_ = tmp_.file("b-wire.pcap");
  capture_ = std::make_unique<Child>(b_.ns->exec("tcpdump -Z root --immediate-mode -i wire -U -n -w " + pcap_),
                                     tmp_.file("tcpdump.log"));
  ASSERT_TRUE(e2e::wait_for(
      [&] { return e2e::read_file(tmp_.file("tcpdump.log")).find("listening") != std::string::npos; }, 5000));
  const DataplaneCounters b0 = b_.dp->counters();
  const std::vector<std::string> ike = scapy_esp_fragments("ike", 7000, 0x7171, false, true, ", \"vlan\": 100");
  ASSERT_EQ(ike.size(), 3u) << e2e::read_file(tmp_.file("fragments.err"));
  ASSERT_EQ(ike[0].substr(12, 4), std::string("\x81\x00\x00\x64", 4)) << "tagged frames";
  inject(*a_.ns, "wire", ike);
  ASSERT_TRUE(e2e::wait_for(
      [&] {
        return b_.dp->counters().verdict[OV2_VERDICT_REDIRECT_WIRE_INGRESS] -
                   b0.verdict[OV2_VERDICT_REDIRECT_WIRE_INGRESS] >=
               1;
      },
      3000))
      << dump(*b_.dp);
  stop_capture();
  const DataplaneCounters b1 = b_.dp->counters();
  EXPECT_EQ(b1.wire[OV2_WIRE_REDIRECT_FRAGMENT] - b0.wire[OV2_WIRE_REDIRECT_FRAGMENT], 3u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxReassembled), 1u) << dump(*b_.dp);
  EXPECT_EQ(wdelta(b0, b1, WorkerCounter::RxReasmPassed), 1u) << dump(*b_.dp);
  // On b's wire: exactly the whole datagram (28 + 1304 bytes), tagged VID 100.
  const auto rows = tshark_fields("udp.port == 4500", " -e vlan.id -e ip.len -e ip.flags.mf -e ip.frag_offset", 4);
  ASSERT_EQ(rows.size(), 1u) << tshark_raw_;
  EXPECT_EQ(rows[0][0], "100") << tshark_raw_;
  EXPECT_EQ(rows[0][1], "1332") << tshark_raw_;
  EXPECT_TRUE(rows[0][3].empty() || rows[0][3] == "0") << tshark_raw_;
}


// One kick hands the whole TX batch to the driver where the kernel takes a
// per-socket budget (XDP_MAX_TX_SKB_BUDGET, Linux 6.17+): a copy-mode sendto
// used to stop after 32 descriptors.  On older kernels the budget stays 32 and
// the same sendto is seen to stop there.
TEST(DataplaneXskPort, OneSendtoTransmitsUpToTheSocketsTxBudgetAndTheBudgetIsTheRingWhereTheKernelTakesIt) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, AF_XDP)";
  e2e::remove_stale_namespaces();
  Netns ns("ov2t" + std::to_string(getpid()) + "x");
  must("ip -n " + ns.name() + " link add xa type veth peer name xb");
  must("ip -n " + ns.name() + " link set xa up && ip -n " + ns.name() + " link set xb up");
  InNetns in(ns);
  Umem umem(Umem::Config{});
  XskPort::Config cfg;
  cfg.tx_size = 256;
  XskPort port(umem, "xa", 0, cfg);
  utsname u{};
  ASSERT_EQ(uname(&u), 0);
  int major = 0, minor = 0;
  ASSERT_EQ(std::sscanf(u.release, "%d.%d", &major, &minor), 2) << u.release;
  if (major > 6 || (major == 6 && minor >= 17))
    EXPECT_EQ(port.tx_budget(), cfg.tx_size) << u.release;
  else
    EXPECT_EQ(port.tx_budget(), 32u) << u.release;

  // 200 minimal frames (to a MAC nobody has: xb's stack drops them), one sendto.
  constexpr uint32_t kFrames = 200;
  uint32_t idx = 0;
  ASSERT_EQ(xsk_ring_prod__reserve(&port.tx, kFrames, &idx), kFrames);
  for (uint32_t i = 0; i < kFrames; ++i) {
    uint64_t addr = 0;
    ASSERT_TRUE(umem.alloc(&addr));
    uint8_t* frame = static_cast<uint8_t*>(xsk_umem__get_data(umem.area(), addr));
    std::memset(frame, 0, 60);
    std::memset(frame, 0x02, 6);     // locally administered unicast destination
    frame[12] = 0x88;  // local experimental EtherType 0x88b5
    frame[13] = 0xb5;
    xdp_desc* d = xsk_ring_prod__tx_desc(&port.tx, idx + i);
    d->addr = addr;
    d->len = 60;
    d->options = 0;
  }
  xsk_ring_prod__submit(&port.tx, kFrames);
  const uint32_t before = __atomic_load_n(port.tx.consumer, __ATOMIC_ACQUIRE);
  const ssize_t rc = sendto(port.fd(), nullptr, 0, MSG_DONTWAIT, nullptr, 0);
  ASSERT_TRUE(rc == 0 || errno == EAGAIN) << strerror(errno);
  const uint32_t taken = __atomic_load_n(port.tx.consumer, __ATOMIC_ACQUIRE) - before;
  EXPECT_EQ(taken, std::min(kFrames, port.tx_budget()));
  // And they really went out: the completion ring has them back once the peer
  // has consumed them (in this sendto's softirq, or in ksoftirqd on a busy machine).
  uint32_t cidx = 0, completed = 0;
  for (int i = 0; i < 200 && completed < taken; ++i) {
    completed += xsk_ring_cons__peek(&port.comp, kFrames - completed, &cidx);  // peek moves past what it returned
    if (completed < taken) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(completed, taken);
}

}  // namespace
}  // namespace ov2
