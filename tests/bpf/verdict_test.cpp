// ov2_verdict (with ov2_deliver in front of it) on a real veth pair in a test
// namespace.  BPF_PROG_TEST_RUN cannot be used here: on this kernel a
// SCHED_CLS test run refuses a ctx with data_meta (EINVAL), so metadata can
// only reach a TC program the way it does in production: XDP writes it, the
// stack carries it to TC ingress.  Frames are sent into ov2-nic with an
// AF_PACKET socket (standing in for the worker) and arrive at ov2.
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "bpf_harness.h"

namespace ov2::test {
namespace {

constexpr uint64_t kVerdictSaHandle = 0xfeedface00000001ULL;
const Mac kHostMac = {0x02, 0, 0, 0, 0, 0x0b};
const Mac kWireMac = {0x02, 0, 0, 0, 0, 0x0c};
constexpr uint16_t kUdpPort = 40000;

uint32_t rx(uint32_t delete_req, uint32_t done, uint32_t status) { return ov2_rx_make(delete_req, done, 0, status); }

Bytes inner_udp_to_host() {
  return FrameBuilder().ipv4("10.1.0.1", "10.2.0.1", kProtoUdp).udp(1234, kUdpPort).payload({'o', 'v', '2'}).build();
}

void write_sysctl(const std::string& path, const std::string& value) {
  std::ofstream f("/proc/sys/" + path);
  f << value;
}

// Raw XDP program "ov2_test_meta": moves `metalen` bytes that follow the
// Ethernet header into data_meta (the frame is otherwise unchanged) and
// passes.  It lets tests hand ov2_verdict forged metadata, which ov2_deliver
// by design never produces.
int load_meta_writer(int metalen) {
  auto insn = [](uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
    bpf_insn i{};
    i.code = code;
    i.dst_reg = dst & 0xf;
    i.src_reg = src & 0xf;
    i.off = off;
    i.imm = imm;
    return i;
  };
  std::vector<bpf_insn> p;
  p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0));         // r6 = ctx
  p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0));         // r1 = ctx
  p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_K, 2, 0, 0, -metalen));  // r2 = -metalen
  p.push_back(insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_xdp_adjust_meta));
  const size_t jne = p.size();
  p.push_back(insn(BPF_JMP | BPF_JNE | BPF_K, 0, 0, 0, 0));    // if r0 != 0 goto pass
  p.push_back(insn(BPF_LDX | BPF_MEM | BPF_W, 2, 6, 8, 0));    // r2 = data_meta
  p.push_back(insn(BPF_LDX | BPF_MEM | BPF_W, 3, 6, 0, 0));    // r3 = data
  p.push_back(insn(BPF_LDX | BPF_MEM | BPF_W, 5, 6, 4, 0));    // r5 = data_end
  p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_X, 4, 2, 0, 0));  // r4 = meta + metalen
  p.push_back(insn(BPF_ALU64 | BPF_ADD | BPF_K, 4, 0, 0, metalen));
  const size_t jgt1 = p.size();
  p.push_back(insn(BPF_JMP | BPF_JGT | BPF_X, 4, 3, 0, 0));    // if r4 > data goto pass
  p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_X, 7, 3, 0, 0));  // r7 = data + 14 + metalen
  p.push_back(insn(BPF_ALU64 | BPF_ADD | BPF_K, 7, 0, 0, 14 + metalen));
  const size_t jgt2 = p.size();
  p.push_back(insn(BPF_JMP | BPF_JGT | BPF_X, 7, 5, 0, 0));  // if r7 > data_end goto pass
  for (int i = 0; i < metalen / 4; ++i) {
    p.push_back(insn(BPF_LDX | BPF_MEM | BPF_W, 0, 3, static_cast<int16_t>(14 + 4 * i), 0));
    p.push_back(insn(BPF_STX | BPF_MEM | BPF_W, 2, 0, static_cast<int16_t>(4 * i), 0));
  }
  const size_t pass = p.size();
  p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_PASS));
  p.push_back(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
  for (size_t j : {jne, jgt1, jgt2}) p[j].off = static_cast<int16_t>(pass - j - 1);
  const int fd = bpf_prog_load(BPF_PROG_TYPE_XDP, "ov2_test_meta", "GPL", p.data(), p.size(), nullptr);
  if (fd < 0) throw std::runtime_error(std::string("loading ov2_test_meta: ") + std::strerror(errno));
  return fd;
}

// ov2 / ov2-nic in a test namespace with the offload programs attached, an
// AF_PACKET sender on ov2-nic and a UDP socket on 10.2.0.1 that reports the
// skb mark of what it receives.
class OffloadPair {
 public:
  OffloadPair() : netns_("v") {
    netns_.ip("link add ov2 type veth peer name ov2-nic");
    write_sysctl("net/ipv6/conf/ov2/disable_ipv6", "1");
    write_sysctl("net/ipv6/conf/ov2-nic/disable_ipv6", "1");
    write_sysctl("net/ipv4/conf/all/rp_filter", "0");
    write_sysctl("net/ipv4/conf/default/rp_filter", "0");
    netns_.ip("link set ov2 address 02:00:00:00:00:0b");
    netns_.ip("addr add 10.2.0.1/24 dev ov2");
    netns_.ip("link set ov2 up");
    netns_.ip("link set ov2-nic up");
    write_sysctl("net/ipv4/conf/ov2/rp_filter", "0");
    host_ifindex_ = static_cast<int>(if_nametoindex("ov2"));
    nic_ifindex_ = static_cast<int>(if_nametoindex("ov2-nic"));
    programs().attach_offload(host_ifindex_, nic_ifindex_);

    sender_ = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    sockaddr_ll ll{};
    ll.sll_family = AF_PACKET;
    ll.sll_ifindex = nic_ifindex_;
    if (sender_ < 0 || bind(sender_, reinterpret_cast<sockaddr*>(&ll), sizeof(ll)) != 0)
      throw std::runtime_error("AF_PACKET socket on ov2-nic");

    receiver_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    const int one = 1;
    setsockopt(receiver_, SOL_SOCKET, SO_RCVMARK, &one, sizeof(one));
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(kUdpPort);
    sin.sin_addr.s_addr = htonl(INADDR_ANY);
    if (receiver_ < 0 || bind(receiver_, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) != 0)
      throw std::runtime_error("UDP socket on 10.2.0.1");
  }
  ~OffloadPair() {
    programs().detach_all();
    if (sender_ >= 0) close(sender_);
    if (receiver_ >= 0) close(receiver_);
  }

  int host_ifindex() const { return host_ifindex_; }

  // A wire (veth `wire`, peer `wire-peer`) with ov2_wire attached and the
  // inner packet's source network (10.1.0.0/24) routed through it; strict
  // reverse-path filter everywhere: what comes in on ov2 from 10.1.0.1 is
  // dropped, what comes in on the wire passes.
  void add_wire() {
    netns_.ip("link add wire type veth peer name wire-peer");
    write_sysctl("net/ipv6/conf/wire/disable_ipv6", "1");
    write_sysctl("net/ipv6/conf/wire-peer/disable_ipv6", "1");
    netns_.ip("link set wire address 02:00:00:00:00:0c");
    netns_.ip("addr add 10.1.0.2/24 dev wire");
    netns_.ip("link set wire up");
    netns_.ip("link set wire-peer up");
    for (const char* dev : {"all", "ov2", "wire"})
      write_sysctl(std::string("net/ipv4/conf/") + dev + "/rp_filter", "1");
    programs().attach_wire(static_cast<int>(if_nametoindex("wire")));
  }

  void send(const Bytes& frame) const {
    if (::send(sender_, frame.data(), frame.size(), 0) != static_cast<ssize_t>(frame.size()))
      throw std::runtime_error(std::string("send on ov2-nic: ") + std::strerror(errno));
  }
  void send_shim(uint32_t rx_info, uint64_t cookie = programs().cookie(), uint64_t sa_handle = kVerdictSaHandle,
                 const Mac& dst = kHostMac, uint16_t wire_vlan_tci = 0) const {
    send(FrameBuilder()
             .ethernet(OV2_SHIM_ETHERTYPE, dst)
             .shim(cookie, sa_handle, rx_info, kEthIpv4, wire_vlan_tci)
             .payload(inner_udp_to_host())
             .build());
  }
  // The next datagram's skb mark, or -1 if none arrives within a second.
  int64_t receive_mark() const {
    for (int i = 0; i < 100; ++i) {
      char data[64];
      char control[CMSG_SPACE(sizeof(uint32_t))] = {};
      iovec iov{data, sizeof(data)};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      if (recvmsg(receiver_, &msg, 0) >= 0) {
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
          if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_MARK) {
            uint32_t mark;
            std::memcpy(&mark, CMSG_DATA(c), sizeof(mark));
            return mark;
          }
        return 0;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
  }
  bool nothing_received() const {
    char data[64];
    return recv(receiver_, data, sizeof(data), MSG_DONTWAIT) < 0;
  }

 private:
  TestNetns netns_;
  int host_ifindex_ = 0;
  int nic_ifindex_ = 0;
  int sender_ = -1;
  int receiver_ = -1;
};

// Waits (bounded) until ov2_verdict has seen `packets` more packets.
std::vector<uint64_t> wait_verdicts(const CounterDelta& counters, uint64_t packets) {
  for (int i = 0; i < 200; ++i) {
    auto d = counters.delta();
    if (d[OV2_VERDICT_RX] >= packets) return d;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return counters.delta();
}

struct EventSink {
  std::vector<ov2_event> events;
  static int on_event(void* ctx, void* data, size_t size) {
    if (size == sizeof(ov2_event)) {
      ov2_event e;
      std::memcpy(&e, data, sizeof(e));
      static_cast<EventSink*>(ctx)->events.push_back(e);
    }
    return 0;
  }
};

class VerdictTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ring_ = ring_buffer__new(programs().events_fd(), &EventSink::on_event, &sink_, nullptr);
    ASSERT_NE(ring_, nullptr);
    ring_buffer__consume(ring_);
    sink_.events.clear();
  }
  void TearDown() override {
    ring_buffer__consume(ring_);
    ring_buffer__free(ring_);
    programs().set_verdict_mark(0);
  }
  ring_buffer* ring_ = nullptr;
  EventSink sink_;
};

TEST_F(VerdictTest, CryptoDoneWithSuccessIsAcceptedAndReachesTheSocketWithTheMark) {
  OffloadPair pair;
  programs().set_verdict_mark(0x77);
  CounterDelta counters(&BpfPrograms::verdict_counters);
  pair.send_shim(rx(0, 1, CRYPTO_SUCCESS));
  EXPECT_EQ(wait_verdicts(counters, 1),
            CounterDelta::only(OV2_VERDICT_COUNTER_MAX, {{OV2_VERDICT_RX, 1}, {OV2_VERDICT_ACCEPT, 1}}));
  EXPECT_EQ(pair.receive_mark(), 0x77);

  programs().set_verdict_mark(0);  // 0: the mark is left alone
  pair.send_shim(rx(0, 1, CRYPTO_SUCCESS));
  EXPECT_EQ(pair.receive_mark(), 0);
}

TEST_F(VerdictTest, CryptoDoneClearIsDroppedAsNotDone) {
  OffloadPair pair;
  CounterDelta counters(&BpfPrograms::verdict_counters);
  pair.send_shim(rx(0, 0, CRYPTO_SUCCESS));
  EXPECT_EQ(wait_verdicts(counters, 1),
            CounterDelta::only(OV2_VERDICT_COUNTER_MAX, {{OV2_VERDICT_RX, 1}, {OV2_VERDICT_DROP_NOT_DONE, 1}}));
  EXPECT_TRUE(pair.nothing_received());
}

// The worker's own ICMP errors (packet too big for the tunnel): SA handle 0
// and receive word 0 are the one plain packet ov2_verdict lets in, unmarked.
TEST_F(VerdictTest, DevicePlainPacketWithNoSaAndZeroReceiveWordIsAcceptedUnmarked) {
  OffloadPair pair;
  programs().set_verdict_mark(0x77);
  CounterDelta counters(&BpfPrograms::verdict_counters);
  pair.send_shim(0, programs().cookie(), 0);
  EXPECT_EQ(wait_verdicts(counters, 1),
            CounterDelta::only(OV2_VERDICT_COUNTER_MAX, {{OV2_VERDICT_RX, 1}, {OV2_VERDICT_ACCEPT_PLAIN, 1}}));
  EXPECT_EQ(pair.receive_mark(), 0) << "plain: not marked as decrypted";
  programs().set_verdict_mark(0);
}

// A reassembled UDP datagram that is not NAT-T ESP (IKE to a NAT-T SA's
// address): SA handle 0 and receive word OV2_RX_DELIVER_WIRE, with the wire's
// MAC as destination, go to the wire's ingress and pass a strict reverse-path
// filter there (through ov2 the filter drops them: see the next test).
TEST_F(VerdictTest, DeliverWireWordWithNoSaIsRedirectedToTheWireIngressAndPassesTheReversePathFilter) {
  OffloadPair pair;
  pair.add_wire();
  programs().set_verdict_mark(0x77);
  CounterDelta counters(&BpfPrograms::verdict_counters);
  CounterDelta wire(&BpfPrograms::wire_counters);
  pair.send_shim(OV2_RX_DELIVER_WIRE, programs().cookie(), 0, kWireMac);
  EXPECT_EQ(wait_verdicts(counters, 1),
            CounterDelta::only(OV2_VERDICT_COUNTER_MAX, {{OV2_VERDICT_RX, 1}, {OV2_VERDICT_REDIRECT_WIRE_INGRESS, 1}}));
  EXPECT_EQ(pair.receive_mark(), 0) << "received on the wire, plain: not marked";
  EXPECT_EQ(wire.delta(), CounterDelta::only(OV2_WIRE_COUNTER_MAX, {})) << "ov2_wire (driver mode) does not run again";
  programs().set_verdict_mark(0);
}

// What a packet socket on the wire sees arrive: the frame and its VLAN tag
// (PACKET_AUXDATA: the skb's tag, in front of the receive path that hands a
// tagged packet to its VLAN device -- vlan_do_receive).
struct TappedFrame {
  bool got = false;
  bool vlan = false;  // TP_STATUS_VLAN_VALID
  uint16_t tci = 0, tpid = 0;
  Bytes frame;
};

class WireTap {
 public:
  WireTap() : fd_(socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL))) {
    sockaddr_ll ll{};
    ll.sll_family = AF_PACKET;
    ll.sll_protocol = htons(ETH_P_ALL);
    ll.sll_ifindex = static_cast<int>(if_nametoindex("wire"));
    const int one = 1;
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&ll), sizeof(ll)) != 0 ||
        setsockopt(fd_, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) != 0)
      throw std::runtime_error("AF_PACKET tap on wire");
  }
  ~WireTap() { close(fd_); }
  WireTap(const WireTap&) = delete;
  WireTap& operator=(const WireTap&) = delete;

  // The next IPv4 frame arriving on the wire within a second.
  TappedFrame next_ipv4() const {
    for (int i = 0; i < 100; ++i) {
      uint8_t data[2048];
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(tpacket_auxdata))] = {};
      sockaddr_ll from{};
      iovec iov{data, sizeof(data)};
      msghdr msg{};
      msg.msg_name = &from;
      msg.msg_namelen = sizeof(from);
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      const ssize_t n = recvmsg(fd_, &msg, 0);
      if (n < 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      if (from.sll_pkttype == PACKET_OUTGOING || from.sll_protocol != htons(ETH_P_IP)) continue;
      TappedFrame t;
      t.got = true;
      t.frame.assign(data, data + n);
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA) {
          tpacket_auxdata aux;
          std::memcpy(&aux, CMSG_DATA(c), sizeof(aux));
          t.vlan = (aux.tp_status & TP_STATUS_VLAN_VALID) != 0;
          t.tci = aux.tp_vlan_tci;
          t.tpid = aux.tp_vlan_tpid;
        }
      return t;
    }
    return {};
  }

 private:
  int fd_;
};

// The wire frames carried an 802.1Q tag: the receive word says so and the
// shim/metadata carry the TCI; ov2_verdict puts the tag back before the
// redirect, so the datagram arrives on the wire tagged, as its fragments
// did, for the wire's VLAN device.  (This kernel has no 802.1Q devices,
// CONFIG_VLAN_8021Q unset: with no VLAN 100 device the stack drops a tagged
// packet as for another host, as it would the tagged fragments themselves.)
TEST_F(VerdictTest, DeliverWireWordWithAVlanTagArrivesOnTheWireWithTheTagPutBack) {
  OffloadPair pair;
  pair.add_wire();
  WireTap tap;
  CounterDelta counters(&BpfPrograms::verdict_counters);
  CounterDelta wire(&BpfPrograms::wire_counters);
  pair.send_shim(OV2_RX_DELIVER_WIRE | OV2_RX_WIRE_VLAN, programs().cookie(), 0, kWireMac, 0xa064);  // PCP 5, VID 100
  EXPECT_EQ(wait_verdicts(counters, 1),
            CounterDelta::only(OV2_VERDICT_COUNTER_MAX, {{OV2_VERDICT_RX, 1}, {OV2_VERDICT_REDIRECT_WIRE_INGRESS, 1}}));
  const TappedFrame t = tap.next_ipv4();
  ASSERT_TRUE(t.got) << "nothing arrived on the wire";
  EXPECT_TRUE(t.vlan);
  EXPECT_EQ(t.tci, 0xa064);
  EXPECT_EQ(t.tpid, 0x8100);
  EXPECT_EQ(Bytes(t.frame.begin() + 14, t.frame.end()), inner_udp_to_host()) << "the datagram itself is untouched";
  EXPECT_EQ(Bytes(t.frame.begin(), t.frame.begin() + 6), Bytes(kWireMac.begin(), kWireMac.end()));
  EXPECT_TRUE(pair.nothing_received()) << "no VLAN 100 device here: not for this host";
  EXPECT_EQ(wire.delta(), CounterDelta::only(OV2_WIRE_COUNTER_MAX, {})) << "ov2_wire (driver mode) does not run again";
}

// Control: the plain word (an untagged wire frame) leaves no tag, even with a
// TCI in the shim, and the datagram is received on the wire.
TEST_F(VerdictTest, DeliverWireWordWithoutTheVlanBitArrivesUntagged) {
  OffloadPair pair;
  pair.add_wire();
  WireTap tap;
  pair.send_shim(OV2_RX_DELIVER_WIRE, programs().cookie(), 0, kWireMac, 0xa064);
  const TappedFrame t = tap.next_ipv4();
  ASSERT_TRUE(t.got) << "nothing arrived on the wire";
  EXPECT_FALSE(t.vlan);
  EXPECT_EQ(Bytes(t.frame.begin() + 14, t.frame.end()), inner_udp_to_host());
  EXPECT_EQ(pair.receive_mark(), 0) << "received";
}

TEST_F(VerdictTest, ThePlainPacketThroughOv2IsDroppedByTheStrictReversePathFilter) {
  // Why the redirect: the same datagram accepted as plain on ov2 never
  // reaches the socket.  Proves the previous test's filter can fail.
  OffloadPair pair;
  pair.add_wire();
  CounterDelta counters(&BpfPrograms::verdict_counters);
  pair.send_shim(0, programs().cookie(), 0);
  EXPECT_EQ(wait_verdicts(counters, 1),
            CounterDelta::only(OV2_VERDICT_COUNTER_MAX, {{OV2_VERDICT_RX, 1}, {OV2_VERDICT_ACCEPT_PLAIN, 1}}));
  EXPECT_EQ(pair.receive_mark(), -1) << "the reverse-path filter let it through ov2";
}

TEST_F(VerdictTest, DeliverWireWordWithNoWireAttachedIsDropped) {
  OffloadPair pair;
  CounterDelta counters(&BpfPrograms::verdict_counters);
  pair.send_shim(OV2_RX_DELIVER_WIRE, programs().cookie(), 0, kWireMac);
  pair.send_shim(OV2_RX_DELIVER_WIRE | OV2_RX_WIRE_VLAN, programs().cookie(), 0, kWireMac, 100);
  EXPECT_EQ(wait_verdicts(counters, 2),
            CounterDelta::only(OV2_VERDICT_COUNTER_MAX, {{OV2_VERDICT_RX, 2}, {OV2_VERDICT_DROP_NO_WIRE, 2}}));
  EXPECT_TRUE(pair.nothing_received());
}

TEST_F(VerdictTest, DeliverWireWordWithAnSaOrAnotherBitOrAWrongCookieIsNotRedirected) {
  OffloadPair pair;
  pair.add_wire();
  CounterDelta counters(&BpfPrograms::verdict_counters);
  pair.send_shim(OV2_RX_DELIVER_WIRE, programs().cookie(), kVerdictSaHandle, kWireMac);
  pair.send_shim(OV2_RX_DELIVER_WIRE | OV2_RX_NEXT_CRYPTO_DONE, programs().cookie(), 0, kWireMac);
  pair.send_shim(OV2_RX_WIRE_VLAN, programs().cookie(), 0, kWireMac, 100);  // the VLAN bit alone
  pair.send_shim(OV2_RX_DELIVER_WIRE | OV2_RX_WIRE_VLAN, programs().cookie(), kVerdictSaHandle, kWireMac, 100);
  EXPECT_EQ(wait_verdicts(counters, 4),
            CounterDelta::only(OV2_VERDICT_COUNTER_MAX, {{OV2_VERDICT_RX, 4}, {OV2_VERDICT_DROP_NOT_DONE, 4}}));
  // Without the worker's cookie ov2_deliver drops it: ov2_verdict never sees it.
  CounterDelta deliver(&BpfPrograms::deliver_counters);
  pair.send_shim(OV2_RX_DELIVER_WIRE, programs().cookie() ^ 1, 0, kWireMac);
  for (int i = 0; i < 200 && deliver.delta()[OV2_DELIVER_RX] == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(deliver.delta(),
            CounterDelta::only(OV2_DELIVER_COUNTER_MAX, {{OV2_DELIVER_RX, 1}, {OV2_DELIVER_BAD_COOKIE, 1}}));
  EXPECT_EQ(counters.delta()[OV2_VERDICT_RX], 4u);
  EXPECT_TRUE(pair.nothing_received());
}

TEST_F(VerdictTest, NoSaWithAnyReceiveBitButCryptoDoneIsStillDroppedAsNotDone) {
  OffloadPair pair;
  CounterDelta counters(&BpfPrograms::verdict_counters);
  pair.send_shim(rx(0, 0, CRYPTO_GENERIC_ERROR), programs().cookie(), 0);
  pair.send_shim(ov2_rx_make(0, 0, 1, 0), programs().cookie(), 0);  // NextCryptoDone alone
  pair.send_shim(0, programs().cookie(), 1);                        // an SA, nothing checked
  EXPECT_EQ(wait_verdicts(counters, 3),
            CounterDelta::only(OV2_VERDICT_COUNTER_MAX, {{OV2_VERDICT_RX, 3}, {OV2_VERDICT_DROP_NOT_DONE, 3}}));
  EXPECT_TRUE(pair.nothing_received());
}

TEST_F(VerdictTest, EveryFailureStatusIsCountedPerStatusAndDropped) {
  OffloadPair pair;
  CounterDelta counters(&BpfPrograms::verdict_counters);
  CounterDelta statuses(&BpfPrograms::verdict_status_counters);
  for (uint32_t status = CRYPTO_GENERIC_ERROR; status < OV2_CRYPTO_STATUS_COUNT; ++status)
    pair.send_shim(rx(0, 1, status));
  pair.send_shim(rx(0, 1, 9));  // outside the NDIS enumeration: dropped, no per-status slot
  EXPECT_EQ(wait_verdicts(counters, 8),
            CounterDelta::only(OV2_VERDICT_COUNTER_MAX, {{OV2_VERDICT_RX, 8}, {OV2_VERDICT_DROP_STATUS, 8}}));
  EXPECT_EQ(statuses.delta(), std::vector<uint64_t>({0, 1, 1, 1, 1, 1, 1, 1}));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_TRUE(pair.nothing_received());
}

TEST_F(VerdictTest, SaDeleteRequestRaisesAnEventAndThePacketKeepsItsVerdict) {
  OffloadPair pair;
  CounterDelta counters(&BpfPrograms::verdict_counters);
  pair.send_shim(rx(1, 1, CRYPTO_SUCCESS));
  pair.send_shim(rx(1, 0, CRYPTO_SUCCESS));
  pair.send_shim(rx(1, 1, CRYPTO_TRANSPORT_ESP_AUTH_FAILED));
  EXPECT_EQ(wait_verdicts(counters, 3), CounterDelta::only(OV2_VERDICT_COUNTER_MAX, {{OV2_VERDICT_RX, 3},
                                                                                     {OV2_VERDICT_SA_DELETE_REQ, 3},
                                                                                     {OV2_VERDICT_ACCEPT, 1},
                                                                                     {OV2_VERDICT_DROP_NOT_DONE, 1},
                                                                                     {OV2_VERDICT_DROP_STATUS, 1}}));
  ring_buffer__consume(ring_);
  ASSERT_EQ(sink_.events.size(), 3u);
  const uint32_t expected_info[] = {rx(1, 1, 0), rx(1, 0, 0), rx(1, 1, CRYPTO_TRANSPORT_ESP_AUTH_FAILED)};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(sink_.events[i].type, static_cast<uint32_t>(OV2_EVENT_SA_DELETE_REQ));
    EXPECT_EQ(sink_.events[i].rx_info, expected_info[i]);
    EXPECT_EQ(sink_.events[i].sa_handle, kVerdictSaHandle);
  }
  EXPECT_EQ(pair.receive_mark(), 0) << "the successful one is still delivered";
}

TEST_F(VerdictTest, FullEventRingCountsLostEvents) {
  OffloadPair pair;
  CounterDelta counters(&BpfPrograms::verdict_counters);
  // 64 KiB ring, 24 bytes per record: about 2730 fit.  Send 3000 in small
  // bursts so the veth ring does not drop any, without consuming.
  uint64_t sent = 0;
  for (int burst = 0; burst < 100; ++burst) {
    for (int i = 0; i < 30; ++i) pair.send_shim(rx(1, 0, 0));
    sent += 30;
    wait_verdicts(counters, sent);
  }
  auto d = wait_verdicts(counters, sent);
  EXPECT_EQ(d[OV2_VERDICT_RX], sent);
  EXPECT_GT(d[OV2_VERDICT_EVENT_LOST], 0u);
  EXPECT_GT(d[OV2_VERDICT_SA_DELETE_REQ], 2000u);
  EXPECT_EQ(d[OV2_VERDICT_SA_DELETE_REQ] + d[OV2_VERDICT_EVENT_LOST], sent);
  ring_buffer__consume(ring_);
  EXPECT_EQ(sink_.events.size(), d[OV2_VERDICT_SA_DELETE_REQ]);
}

TEST_F(VerdictTest, ForgedShimNeverReachesTheVerdict) {
  OffloadPair pair;
  CounterDelta verdicts(&BpfPrograms::verdict_counters);
  CounterDelta delivers(&BpfPrograms::deliver_counters);
  pair.send_shim(rx(1, 1, CRYPTO_SUCCESS), programs().cookie() + 1);
  pair.send(FrameBuilder().ethernet(kEthIpv4, kHostMac).payload(inner_udp_to_host()).build());
  for (int i = 0; i < 200 && delivers.delta()[OV2_DELIVER_BAD_COOKIE] + delivers.delta()[OV2_DELIVER_NOT_SHIM] < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(delivers.delta()[OV2_DELIVER_BAD_COOKIE], 1u);
  EXPECT_GE(delivers.delta()[OV2_DELIVER_NOT_SHIM], 1u);
  EXPECT_EQ(verdicts.delta()[OV2_VERDICT_RX], 0u);
  EXPECT_TRUE(pair.nothing_received());
  ring_buffer__consume(ring_);
  EXPECT_TRUE(sink_.events.empty());
}

// Metadata ov2_deliver never writes, handed to ov2_verdict by ov2_test_meta.
TEST_F(VerdictTest, MissingShortOrForgedMetadataIsDroppedAsNoMeta) {
  OffloadPair pair;
  auto meta = [](uint32_t magic, uint8_t version, uint8_t dir) {
    ov2_meta m{};
    m.nbl.rx.info = rx(0, 1, CRYPTO_SUCCESS);
    m.magic = magic;
    m.version = version;
    m.dir = dir;
    const auto* p = reinterpret_cast<const uint8_t*>(&m);
    return Bytes(p, p + sizeof(m));
  };
  auto run_with_writer = [&](int metalen, const Bytes& meta_bytes) {
    const int writer = load_meta_writer(metalen);
    LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = programs().deliver_prog_fd());
    ASSERT_EQ(bpf_xdp_attach(pair.host_ifindex(), writer, XDP_FLAGS_DRV_MODE | XDP_FLAGS_REPLACE, &opts), 0);
    CounterDelta counters(&BpfPrograms::verdict_counters);
    pair.send(FrameBuilder().ethernet(kEthIpv4, kHostMac).payload(meta_bytes).payload(inner_udp_to_host()).build());
    EXPECT_EQ(wait_verdicts(counters, 1),
              CounterDelta::only(OV2_VERDICT_COUNTER_MAX, {{OV2_VERDICT_RX, 1}, {OV2_VERDICT_DROP_NO_META, 1}}))
        << "metalen " << metalen;
    LIBBPF_OPTS(bpf_xdp_attach_opts, back, .old_prog_fd = writer);
    ASSERT_EQ(bpf_xdp_attach(pair.host_ifindex(), programs().deliver_prog_fd(), XDP_FLAGS_DRV_MODE | XDP_FLAGS_REPLACE,
                             &back),
              0);
    close(writer);
  };
  // Control: the writer with correct metadata is accepted, so the drops below
  // are the verdict's doing.
  {
    const int writer = load_meta_writer(OV2_META_SIZE);
    LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = programs().deliver_prog_fd());
    ASSERT_EQ(bpf_xdp_attach(pair.host_ifindex(), writer, XDP_FLAGS_DRV_MODE | XDP_FLAGS_REPLACE, &opts), 0);
    CounterDelta counters(&BpfPrograms::verdict_counters);
    pair.send(FrameBuilder()
                  .ethernet(kEthIpv4, kHostMac)
                  .payload(meta(OV2_META_MAGIC, OV2_META_VERSION, OV2_META_DIR_RX))
                  .payload(inner_udp_to_host())
                  .build());
    EXPECT_EQ(wait_verdicts(counters, 1)[OV2_VERDICT_ACCEPT], 1u);
    LIBBPF_OPTS(bpf_xdp_attach_opts, back, .old_prog_fd = writer);
    ASSERT_EQ(bpf_xdp_attach(pair.host_ifindex(), programs().deliver_prog_fd(), XDP_FLAGS_DRV_MODE | XDP_FLAGS_REPLACE,
                             &back),
              0);
    close(writer);
  }
  run_with_writer(OV2_META_SIZE, meta(OV2_META_MAGIC ^ 1, OV2_META_VERSION, OV2_META_DIR_RX));
  run_with_writer(OV2_META_SIZE, meta(OV2_META_MAGIC, OV2_META_VERSION + 1, OV2_META_DIR_RX));
  run_with_writer(OV2_META_SIZE, meta(OV2_META_MAGIC, OV2_META_VERSION, OV2_META_DIR_TX));
  run_with_writer(16, meta(OV2_META_MAGIC, OV2_META_VERSION, OV2_META_DIR_RX));  // too short
  // 40 bytes with a valid struct at data_meta: the size must be exact.
  Bytes longer = meta(OV2_META_MAGIC, OV2_META_VERSION, OV2_META_DIR_RX);
  longer.insert(longer.end(), 8, 0);
  run_with_writer(40, longer);

  // No metadata at all: a plain IPv4 frame with only the TC program.
  bpf_xdp_detach(pair.host_ifindex(), XDP_FLAGS_DRV_MODE, nullptr);
  CounterDelta counters(&BpfPrograms::verdict_counters);
  pair.send(FrameBuilder().ethernet(kEthIpv4, kHostMac).payload(inner_udp_to_host()).build());
  EXPECT_EQ(wait_verdicts(counters, 1),
            CounterDelta::only(OV2_VERDICT_COUNTER_MAX, {{OV2_VERDICT_RX, 1}, {OV2_VERDICT_DROP_NO_META, 1}}));
  EXPECT_TRUE(pair.nothing_received());
}

}  // namespace
}  // namespace ov2::test
