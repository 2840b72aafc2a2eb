// Shared plumbing of the BPF tests: one loaded BpfPrograms for the binary,
// BPF_PROG_TEST_RUN of XDP programs with metadata in and out, counter deltas,
// and throw-away network namespaces (named ov2t<pid>..., removed on exit and
// at start-up if a crashed run left them) with an AF_XDP socket when a test
// needs a real XSKMAP entry.
#pragma once

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xdp/xsk.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "dataplane/bpf_programs.h"
#include "packet_builder.h"

namespace ov2::test {

// The programs, loaded once per test binary (counters are compared as deltas).
inline BpfPrograms& programs() {
  static BpfPrograms progs(BpfPrograms::Options{.cookie = 0x0123456789abcdefULL, .verdict_mark = 0});
  return progs;
}

struct XdpRun {
  int err = 0;          // bpf_prog_test_run_opts result (0 = ran)
  uint32_t action = 0;  // XDP_* returned by the program
  Bytes meta;           // data_meta .. data after the run
  Bytes frame;          // data .. data_end after the run
};

// Runs an XDP program once on `frame` with `meta` in front of it (the kernel's
// xdp_md{data_meta=0, data=metalen, data_end=total} convention).
inline XdpRun run_xdp(int prog_fd, const Bytes& frame, const Bytes& meta = {}, uint32_t rx_queue = 0) {
  Bytes in = meta;
  in.insert(in.end(), frame.begin(), frame.end());
  Bytes out(in.size() + 512, 0);
  xdp_md ctx_in{};
  ctx_in.data_meta = 0;
  ctx_in.data = static_cast<uint32_t>(meta.size());
  ctx_in.data_end = static_cast<uint32_t>(in.size());
  ctx_in.rx_queue_index = rx_queue;
  xdp_md ctx_out{};
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = in.data(), .data_out = out.data(),
              .data_size_in = static_cast<uint32_t>(in.size()), .data_size_out = static_cast<uint32_t>(out.size()),
              .ctx_in = &ctx_in, .ctx_out = &ctx_out, .ctx_size_in = sizeof(ctx_in), .ctx_size_out = sizeof(ctx_out));
  XdpRun r;
  r.err = bpf_prog_test_run_opts(prog_fd, &opts) ? -errno : 0;
  r.action = opts.retval;
  if (r.err == 0) {
    const uint32_t metalen = ctx_out.data - ctx_out.data_meta;
    const uint32_t total = std::min<uint32_t>(opts.data_size_out, static_cast<uint32_t>(out.size()));
    r.meta.assign(out.begin(), out.begin() + std::min(metalen, total));
    r.frame.assign(out.begin() + std::min(metalen, total), out.begin() + total);
  }
  return r;
}

// Counter snapshot; delta() says what one test did.
class CounterDelta {
 public:
  using Reader = std::vector<uint64_t> (BpfPrograms::*)() const;
  explicit CounterDelta(Reader reader) : reader_(reader), before_((programs().*reader_)()) {}
  std::vector<uint64_t> delta() const {
    std::vector<uint64_t> now = (programs().*reader_)();
    for (size_t i = 0; i < now.size(); ++i) now[i] -= before_[i];
    return now;
  }
  // Delta vector with exactly these indices set to these values.
  static std::vector<uint64_t> only(size_t size, std::initializer_list<std::pair<size_t, uint64_t>> set) {
    std::vector<uint64_t> v(size, 0);
    for (auto [i, n] : set) v[i] = n;
    return v;
  }

 private:
  Reader reader_;
  std::vector<uint64_t> before_;
};

inline int run_command(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

// A network namespace of this test process; the calling thread lives in it
// while the object exists (setns), so sockets and links created meanwhile
// belong to it.  Removed (with everything in it) on destruction.
class TestNetns {
 public:
  explicit TestNetns(const std::string& suffix) : name_("ov2t" + std::to_string(getpid()) + suffix) {
    remove_leftovers();
    run_command("ip netns del " + name_);
    if (run_command("ip netns add " + name_) != 0) throw std::runtime_error("ip netns add " + name_ + " failed");
    original_ = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    const int target = open(("/run/netns/" + name_).c_str(), O_RDONLY | O_CLOEXEC);
    if (original_ < 0 || target < 0 || setns(target, CLONE_NEWNET) != 0) {
      if (target >= 0) close(target);
      cleanup();
      throw std::runtime_error("cannot enter netns " + name_);
    }
    close(target);
    inside_ = true;
  }
  ~TestNetns() { cleanup(); }
  TestNetns(const TestNetns&) = delete;
  TestNetns& operator=(const TestNetns&) = delete;

  const std::string& name() const { return name_; }
  // Runs an `ip` command in the namespace (we are inside already).
  void ip(const std::string& args) const {
    if (run_command("ip " + args) != 0) throw std::runtime_error("ip " + args + " failed in " + name_);
  }

 private:
  // Namespaces of earlier runs of this binary whose process is gone.
  static void remove_leftovers() {
    run_command(
        "for n in $(ip netns list | awk '{print $1}' | grep '^ov2t[0-9]'); do "
        "p=$(echo $n | sed 's/^ov2t\\([0-9]*\\).*/\\1/'); [ -d /proc/$p ] || ip netns del $n; done");
  }
  void cleanup() {
    if (inside_ && original_ >= 0) setns(original_, CLONE_NEWNET);
    inside_ = false;
    if (original_ >= 0) close(original_);
    original_ = -1;
    run_command("ip netns del " + name_);
  }
  std::string name_;
  int original_ = -1;
  bool inside_ = false;
};

// An AF_XDP socket (copy mode, no program loaded by libxdp) bound to queue 0
// of a veth inside a TestNetns: the one way to get a real XSKMAP entry.
class TestXsk {
 public:
  explicit TestXsk(const std::string& ifname) {
    const size_t size = 4096 * 64;
    area_ = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area_ == MAP_FAILED) throw std::runtime_error("mmap umem");
    area_size_ = size;
    if (xsk_umem__create(&umem_, area_, size, &fill_, &comp_, nullptr) != 0)
      throw std::runtime_error("xsk_umem__create failed");
    xsk_socket_config cfg{};
    cfg.rx_size = XSK_RING_CONS__DEFAULT_NUM_DESCS;
    cfg.tx_size = XSK_RING_PROD__DEFAULT_NUM_DESCS;
    cfg.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;
    cfg.bind_flags = XDP_COPY;
    const int err = xsk_socket__create(&xsk_, ifname.c_str(), 0, umem_, &rx_, &tx_, &cfg);
    if (err != 0) throw std::runtime_error("xsk_socket__create on " + ifname + ": " + std::strerror(-err));
  }
  ~TestXsk() {
    if (xsk_) xsk_socket__delete(xsk_);
    if (umem_) xsk_umem__delete(umem_);
    if (area_) munmap(area_, area_size_);
  }
  TestXsk(const TestXsk&) = delete;
  TestXsk& operator=(const TestXsk&) = delete;
  int fd() const { return xsk_socket__fd(xsk_); }

 private:
  void* area_ = nullptr;
  size_t area_size_ = 0;
  xsk_umem* umem_ = nullptr;
  xsk_socket* xsk_ = nullptr;
  xsk_ring_prod fill_{}, tx_{};
  xsk_ring_cons comp_{}, rx_{};
};

// A netns with a veth pair and an XSK on queue 0 of `xsk0`, registered in
// `xsks_map_fd` at index 0 for the object's lifetime.
class XskEnvironment {
 public:
  explicit XskEnvironment(int xsks_map_fd) : netns_("x"), map_fd_(xsks_map_fd) {
    netns_.ip("link add xsk0 type veth peer name xsk1");
    netns_.ip("link set xsk0 up");
    netns_.ip("link set xsk1 up");
    xsk_ = std::make_unique<TestXsk>("xsk0");
    const uint32_t queue = 0;
    const int fd = xsk_->fd();
    if (bpf_map_update_elem(map_fd_, &queue, &fd, BPF_ANY) != 0)
      throw std::runtime_error(std::string("XSKMAP update: ") + std::strerror(errno));
  }
  ~XskEnvironment() {
    const uint32_t queue = 0;
    bpf_map_delete_elem(map_fd_, &queue);
  }

 private:
  TestNetns netns_;
  int map_fd_;
  std::unique_ptr<TestXsk> xsk_;
};

}  // namespace ov2::test
