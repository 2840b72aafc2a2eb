// BpfPrograms attach/detach on real interfaces in a test namespace: replaces
// its own leftovers, refuses foreign programs, removes exactly what it
// attached; and the per-instance shim cookie.
#include <gtest/gtest.h>

#include <cstdarg>
#include <cstdio>
#include <string>

#include "bpf_harness.h"

namespace ov2::test {
namespace {

uint32_t xdp_prog_id(int ifindex) {
  uint32_t id = 0;
  bpf_xdp_query_id(ifindex, XDP_FLAGS_DRV_MODE, &id);
  return id;
}
uint32_t prog_id(int fd) {
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  bpf_obj_get_info_by_fd(fd, &info, &len);
  return info.id;
}
uint32_t tc_ingress_prog_id(int ifindex) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  LIBBPF_OPTS(bpf_tc_opts, q, .handle = 1, .priority = 1);
  return bpf_tc_query(&hook, &q) == 0 ? q.prog_id : 0;
}

// What libbpf prints (warnings and errors; it writes them to stderr
// otherwise) while this object exists.
class LibbpfLog {
 public:
  LibbpfLog() : old_(libbpf_set_print(&LibbpfLog::print)) { text().clear(); }
  ~LibbpfLog() { libbpf_set_print(old_); }
  LibbpfLog(const LibbpfLog&) = delete;
  LibbpfLog& operator=(const LibbpfLog&) = delete;
  static std::string& text() {
    static std::string t;
    return t;
  }

 private:
  static int print(enum libbpf_print_level level, const char* fmt, va_list args) {
    if (level == LIBBPF_DEBUG) return 0;
    char line[1024];
    std::vsnprintf(line, sizeof line, fmt, args);
    text() += line;
    return 0;
  }
  libbpf_print_fn_t old_;
};

class AttachTest : public ::testing::Test {
 protected:
  AttachTest() : netns_("a") {
    netns_.ip("link add ov2 type veth peer name ov2-nic");
    netns_.ip("link add wire0 type veth peer name wire1");
    for (const char* dev : {"ov2", "ov2-nic", "wire0", "wire1"}) netns_.ip(std::string("link set ") + dev + " up");
    host_ = static_cast<int>(if_nametoindex("ov2"));
    nic_ = static_cast<int>(if_nametoindex("ov2-nic"));
    wire_ = static_cast<int>(if_nametoindex("wire0"));
  }
  TestNetns netns_;
  int host_ = 0, nic_ = 0, wire_ = 0;
};

TEST_F(AttachTest, AttachPutsEachProgramWhereTheDesignSaysAndDetachRemovesThem) {
  BpfPrograms progs({});
  progs.attach_wire(wire_);
  progs.attach_offload(host_, nic_);
  EXPECT_EQ(xdp_prog_id(wire_), prog_id(progs.wire_prog_fd()));
  EXPECT_EQ(xdp_prog_id(host_), prog_id(progs.deliver_prog_fd()));
  EXPECT_EQ(xdp_prog_id(nic_), prog_id(progs.tx_prog_fd()));
  EXPECT_EQ(tc_ingress_prog_id(host_), prog_id(progs.verdict_prog_fd()));
  progs.detach_all();
  EXPECT_EQ(xdp_prog_id(wire_), 0u);
  EXPECT_EQ(xdp_prog_id(host_), 0u);
  EXPECT_EQ(xdp_prog_id(nic_), 0u);
  EXPECT_EQ(tc_ingress_prog_id(host_), 0u);
}

TEST_F(AttachTest, LeftoverOfACrashedDaemonIsReplacedAndTheOldInstanceCannotDetachTheNewOne) {
  BpfPrograms crashed({});
  crashed.attach_wire(wire_);
  crashed.attach_offload(host_, nic_);
  BpfPrograms restarted({});
  ASSERT_NO_THROW(restarted.attach_wire(wire_));
  ASSERT_NO_THROW(restarted.attach_offload(host_, nic_));
  EXPECT_EQ(xdp_prog_id(wire_), prog_id(restarted.wire_prog_fd()));
  EXPECT_EQ(xdp_prog_id(host_), prog_id(restarted.deliver_prog_fd()));
  EXPECT_EQ(xdp_prog_id(nic_), prog_id(restarted.tx_prog_fd()));
  EXPECT_EQ(tc_ingress_prog_id(host_), prog_id(restarted.verdict_prog_fd()));
  {
    LibbpfLog log;
    crashed.detach_all();  // removes only what is still its own: nothing
    EXPECT_EQ(log.text(), "") << "detaching what is no longer ours must not make the kernel refuse (and libbpf print)";
  }
  EXPECT_EQ(xdp_prog_id(wire_), prog_id(restarted.wire_prog_fd()));
  EXPECT_EQ(xdp_prog_id(host_), prog_id(restarted.deliver_prog_fd()));
  EXPECT_EQ(tc_ingress_prog_id(host_), prog_id(restarted.verdict_prog_fd()));
}

// What ipsecov2-bench's pipeline sink did to ov2 (tests/bench): another
// program in the place of ov2_deliver, and an interface whose program was
// taken off.  detach_all removes its remaining programs, leaves the other one
// alone, and libbpf prints nothing (it printed "Kernel error message: Active
// program does not match expected" for each).
TEST_F(AttachTest, DetachLeavesReplacedAndRemovedProgramsAloneAndQuiet) {
  BpfPrograms progs({}), other({});
  progs.attach_wire(wire_);
  progs.attach_offload(host_, nic_);
  LIBBPF_OPTS(bpf_xdp_attach_opts, replace, .old_prog_fd = progs.deliver_prog_fd());
  ASSERT_EQ(bpf_xdp_attach(host_, other.deliver_prog_fd(), XDP_FLAGS_DRV_MODE | XDP_FLAGS_REPLACE, &replace), 0);
  ASSERT_EQ(bpf_xdp_detach(nic_, XDP_FLAGS_DRV_MODE, nullptr), 0);
  LibbpfLog log;
  progs.detach_all();
  EXPECT_EQ(log.text(), "");
  EXPECT_EQ(xdp_prog_id(host_), prog_id(other.deliver_prog_fd()));
  EXPECT_EQ(xdp_prog_id(nic_), 0u);
  EXPECT_EQ(xdp_prog_id(wire_), 0u);
  EXPECT_EQ(tc_ingress_prog_id(host_), 0u);
}

TEST_F(AttachTest, ForeignXdpProgramIsNotReplaced) {
  BpfPrograms other({});
  other.attach_wire(wire_);  // an XDP program named ov2_wire, not ov2_deliver
  BpfPrograms progs({});
  try {
    progs.attach_offload(wire_, nic_);
    FAIL() << "replaced a foreign program";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Kernel);
    EXPECT_NE(std::string(e.what()).find("another XDP program ('ov2_wire'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(xdp_prog_id(wire_), prog_id(other.wire_prog_fd()));
  EXPECT_EQ(xdp_prog_id(nic_), 0u) << "a failed attach_offload leaves nothing behind";
  EXPECT_EQ(tc_ingress_prog_id(wire_), 0u);
}

TEST_F(AttachTest, DestructorDetaches) {
  {
    BpfPrograms progs({});
    progs.attach_offload(host_, nic_);
  }
  EXPECT_EQ(xdp_prog_id(host_), 0u);
  EXPECT_EQ(xdp_prog_id(nic_), 0u);
  EXPECT_EQ(tc_ingress_prog_id(host_), 0u);
}

TEST(CookieTest, EachInstanceGetsARandomCookieThatOnlyItsDeliverAccepts) {
  BpfPrograms a({}), b({});
  EXPECT_NE(a.cookie(), 0u);
  EXPECT_NE(a.cookie(), b.cookie());
  auto shim = [](uint64_t cookie) {
    return FrameBuilder()
        .ethernet(OV2_SHIM_ETHERTYPE)
        .shim(cookie, 1, ov2_rx_make(0, 1, 0, 0), kEthIpv4)
        .ipv4("10.0.0.1", "10.0.0.2", kProtoUdp)
        .udp(1, 2)
        .build();
  };
  EXPECT_EQ(run_xdp(a.deliver_prog_fd(), shim(a.cookie())).action, XDP_PASS);
  EXPECT_EQ(run_xdp(a.deliver_prog_fd(), shim(b.cookie())).action, XDP_DROP);
  EXPECT_EQ(run_xdp(b.deliver_prog_fd(), shim(b.cookie())).action, XDP_PASS);
}

TEST(CountersTest, EveryCounterArrayHasOneSlotPerEnumValue) {
  EXPECT_EQ(programs().wire_counters().size(), static_cast<size_t>(OV2_WIRE_COUNTER_MAX));
  EXPECT_EQ(programs().tx_counters().size(), static_cast<size_t>(OV2_TX_COUNTER_MAX));
  EXPECT_EQ(programs().deliver_counters().size(), static_cast<size_t>(OV2_DELIVER_COUNTER_MAX));
  EXPECT_EQ(programs().verdict_counters().size(), static_cast<size_t>(OV2_VERDICT_COUNTER_MAX));
  EXPECT_EQ(programs().verdict_status_counters().size(), static_cast<size_t>(OV2_CRYPTO_STATUS_COUNT));
}

}  // namespace
}  // namespace ov2::test
