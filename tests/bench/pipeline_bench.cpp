// The pipeline group of ipsecov2-bench: AF_XDP in -> ESP -> AF_XDP out through
// the real data plane (ov2::Dataplane: the daemon's BPF programs, offload
// device, AF_XDP workers and ESP engine; no control socket in between), driven
// by the BPF_F_TEST_XDP_LIVE_FRAMES generator (no pktgen on this kernel).
//
//   netns ov2t<pid>p   (IPv6 off, nothing in the root namespace)
//
//   generator (decap)                                   sink (decap)
//   bench_gen XDP_TX on gen --> wire: ov2_wire -> XSK -> worker -> ov2-nic -> ov2: bench_sink
//                                                                   (ov2_deliver replaced)
//   sink (encap)                                        generator (encap)
//   gen: bench_sink <-- wire <- XSK <- worker <- XSK <- ov2-nic: ov2_tx <-- bench_gen XDP_TX on ov2
//
// Decap frames are sealed beforehand by the engine with the inbound SA's key;
// every frame is the same ESP packet, so the inbound SA has anti-replay off
// (replay_window 0; the engine group measures the window).  The sink counts
// frames of the expected length and EtherType over timed windows (median) and
// copies a sample of them; the samples are checked afterwards (decap: shim
// cookie, CryptoDone+SUCCESS, inner packet byte for byte; encap: the ESP opens
// with the SA and gives back the plaintext) -- a run whose samples fail
// reports a note instead of a number.
//
// CPUs: the generator runs in its thread's softirq context: bench_gen, the
// veth transfer and ov2_wire + the XSK copy (decap) or ov2_tx + the XSK copy
// (encap) all land on the generator's CPU; the worker's CPU does the ESP work,
// the AF_XDP TX (a copy into an skb), the veth transfer and the sink.  One
// worker: generator on the first allowed CPU, worker on the second.  Two
// workers: one generator per queue (the veth picks the peer queue by the
// sending CPU), each pinned next to its worker.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../e2e/dataplane_harness.h"
#include "bench_common.h"
#include "bench_xdp.skel.h"
#include "dataplane/dataplane.h"
#include "dataplane/spd_compiler.h"
#include "esp/esp.h"
#include "ov2_abi.h"

namespace ov2::bench {
namespace {

using e2e::InNetns;
using e2e::must;
using e2e::Netns;

constexpr uint32_t kSampleMax = 1600;  // bench_xdp.bpf.c
constexpr uint32_t kSamples = 8;
struct Sample {
  uint32_t len;
  uint32_t pad;
  uint8_t data[kSampleMax];
};
enum : uint32_t { kFrames = 0, kMatched = 1, kOther = 2, kSampled = 3 };

constexpr uint64_t kCookie = 0x0b2b3b4b5b6b7b8bull;
constexpr uint64_t handle_of(uint64_t slot) { return (uint64_t{9} << 24) | slot; }
constexpr uint64_t kOutHandle = handle_of(1);
// Inbound SA of queue i: slot 2 + i, so that slot % queues == i owns it (RFC
// 9611 style: one SA per worker, Dataplane's owner_of rule).
constexpr uint64_t in_handle(uint32_t i) { return handle_of(2 + i); }

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

SaSpec sa_spec(Direction dir, const char* src, const char* dst, uint32_t spi, const std::vector<uint8_t>& key) {
  SaSpec s;
  s.dir = dir;
  s.mode = Mode::Tunnel;
  s.src = IpAddr::parse(src);
  s.dst = IpAddr::parse(dst);
  s.spi = spi;
  s.enc = EncAlg::AesGcm128;
  s.auth = AuthAlg::None;
  s.enc_key = SecureBytes(key);
  s.replay_window = 0;
  return s;
}

// The plaintext packet sealed into ESP by `sa`, behind an Ethernet header.
std::vector<uint8_t> esp_frame(esp::OutboundSa& sa, const std::vector<uint8_t>& plain, const uint8_t dst_mac[6],
                               const uint8_t src_mac[6]) {
  constexpr uint32_t kRoom = 256;
  std::vector<uint8_t> buf(kRoom + plain.size() + kRoom);
  std::memcpy(buf.data() + kRoom, plain.data(), plain.size());
  esp::Packet p{buf.data() + kRoom, static_cast<uint32_t>(plain.size()), kRoom, kRoom};
  if (sa.encapsulate(p, esp::monotonic_now_ns()) != esp::Reason::Ok)
    throw std::runtime_error("the engine refused to build a benchmark frame");
  std::vector<uint8_t> frame(ETH_HLEN + p.len);
  std::memcpy(frame.data(), dst_mac, 6);
  std::memcpy(frame.data() + 6, src_mac, 6);
  frame[12] = 0x08;
  frame[13] = 0x00;
  std::memcpy(frame.data() + ETH_HLEN, p.data, p.len);
  return frame;
}

// Sends `frame` out of `ifindex` (bench_gen, XDP_TX) in LIVE_FRAMES batches
// until told to stop; pinned to `cpu`, inside `ns`.
class Generator {
 public:
  Generator(const Netns& ns, int prog_fd, int ifindex, std::vector<uint8_t> frame, int cpu) : frame_(std::move(frame)) {
    thread_ = std::thread([this, &ns, prog_fd, ifindex, cpu] {
      if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
      }
      InNetns in(ns);  // the ingress ifindex is looked up in the caller's namespace
      xdp_md ctx{};
      ctx.data_end = static_cast<uint32_t>(frame_.size());
      ctx.ingress_ifindex = static_cast<uint32_t>(ifindex);
      while (!stop_.load(std::memory_order_relaxed)) {
        LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame_.data(),
                    .data_size_in = static_cast<uint32_t>(frame_.size()), .ctx_in = &ctx, .ctx_size_in = sizeof(ctx),
                    .repeat = 1 << 16, .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = 64);
        const int err = bpf_prog_test_run_opts(prog_fd, &opts);
        if (err) {
          error_ = -err;
          return;
        }
        runs_.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  ~Generator() { stop(); }
  void stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  int error() const { return error_; }
  uint64_t frames_sent() const { return runs_.load() << 16; }

 private:
  std::vector<uint8_t> frame_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> runs_{0};
  int error_ = 0;
  std::thread thread_;
};

// The sink on one interface: counts and samples (bench_sink).  It replaces
// the program attached there (ov2_deliver on ov2 for decap) and puts it back
// when destroyed, so that the data plane finds its own program when it
// detaches, as on an interface nobody touched (detaching the sink alone left
// ov2 without a program, and the data plane's detach of ov2_deliver made the
// kernel answer "Active program does not match expected", which libbpf
// printed at every teardown).
class Sink {
 public:
  Sink(int ifindex, uint32_t expect_len, uint16_t expect_type, uint32_t sample_every) : ifindex_(ifindex) {
    skel_ = bench_xdp__open();
    if (!skel_) throw std::runtime_error("cannot open the bench_xdp BPF object");
    skel_->rodata->expect_len = expect_len;
    skel_->rodata->expect_type = expect_type;
    skel_->rodata->sample_every = sample_every;
    if (bench_xdp__load(skel_)) {
      bench_xdp__destroy(skel_);
      throw std::runtime_error("cannot load the bench_xdp BPF programs");
    }
    try {
      self_test(expect_len, expect_type);
    } catch (...) {
      bench_xdp__destroy(skel_);
      throw;
    }
    uint32_t replaced_id = 0;
    if (bpf_xdp_query_id(ifindex, XDP_FLAGS_DRV_MODE, &replaced_id) == 0 && replaced_id != 0)
      replaced_fd_ = bpf_prog_get_fd_by_id(replaced_id);
    LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = replaced_fd_);
    const uint32_t how = replaced_fd_ >= 0 ? XDP_FLAGS_REPLACE : XDP_FLAGS_UPDATE_IF_NOEXIST;
    if (bpf_xdp_attach(ifindex, sink_fd(), XDP_FLAGS_DRV_MODE | how, &opts)) {
      release();
      throw std::runtime_error("cannot attach the benchmark sink (native XDP)");
    }
  }
  ~Sink() {
    LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = sink_fd());
    if (replaced_fd_ >= 0)
      bpf_xdp_attach(ifindex_, replaced_fd_, XDP_FLAGS_DRV_MODE | XDP_FLAGS_REPLACE, &opts);
    else
      bpf_xdp_detach(ifindex_, XDP_FLAGS_DRV_MODE | XDP_FLAGS_REPLACE, &opts);
    release();
  }
  Sink(const Sink&) = delete;
  Sink& operator=(const Sink&) = delete;

  uint64_t counter(uint32_t k) const {
    std::vector<uint64_t> per_cpu(static_cast<size_t>(libbpf_num_possible_cpus()));
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.counters), &k, per_cpu.data())) return 0;
    uint64_t sum = 0;
    for (uint64_t v : per_cpu) sum += v;
    return sum;
  }
  std::vector<std::vector<uint8_t>> samples() const {
    std::vector<std::vector<uint8_t>> out;
    auto s = std::make_unique<Sample>();
    for (uint32_t k = 0; k < kSamples; ++k) {
      if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.samples), &k, s.get()) == 0 && s->len > 0 && s->len <= kSampleMax)
        out.emplace_back(s->data, s->data + s->len);
    }
    return out;
  }
  int gen_prog_fd() const { return bpf_program__fd(skel_->progs.bench_gen); }

 private:
  int sink_fd() const { return bpf_program__fd(skel_->progs.bench_sink); }
  void release() {
    if (replaced_fd_ >= 0) close(replaced_fd_);
    bench_xdp__destroy(skel_);
  }

  // Every branch once with BPF_PROG_TEST_RUN before the numbers count: the
  // generator answers XDP_TX; the sink drops everything, counts an expected
  // frame as matched and samples it, anything else (wrong length, wrong
  // EtherType) as other.  Then counters and samples start from zero.
  void self_test(uint32_t expect_len, uint16_t expect_type) {
    std::vector<uint8_t> good(expect_len, 0x5a), bad_len(expect_len + 1, 0x5a), bad_type(expect_len, 0x5a);
    good[12] = bad_len[12] = static_cast<uint8_t>(expect_type >> 8);
    good[13] = bad_len[13] = static_cast<uint8_t>(expect_type);
    bad_type[12] = static_cast<uint8_t>(~expect_type >> 8);
    auto run = [](int fd, std::vector<uint8_t>& f) {
      LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = f.data(), .data_size_in = static_cast<uint32_t>(f.size()),
                  .repeat = 1);
      if (bpf_prog_test_run_opts(fd, &o)) throw std::runtime_error("BPF_PROG_TEST_RUN of the bench programs failed");
      return o.retval;
    };
    bool ok = run(gen_prog_fd(), good) == XDP_TX;
    for (auto* f : {&good, &bad_len, &bad_type}) ok = ok && run(sink_fd(), *f) == XDP_DROP;
    const auto samples_now = samples();
    ok = ok && counter(kFrames) == 3 && counter(kMatched) == 1 && counter(kOther) == 2 && counter(kSampled) == 1 &&
         samples_now.size() == 1 && samples_now[0] == good;
    if (!ok) throw std::runtime_error("the benchmark sink miscounts in its self-test (BPF_PROG_TEST_RUN)");
    std::vector<uint64_t> zeros(static_cast<size_t>(libbpf_num_possible_cpus()));
    for (uint32_t k = 0; k < 4; ++k) bpf_map_update_elem(bpf_map__fd(skel_->maps.counters), &k, zeros.data(), BPF_ANY);
    auto empty = std::make_unique<Sample>();
    std::memset(empty.get(), 0, sizeof(Sample));
    for (uint32_t k = 0; k < kSamples; ++k)
      bpf_map_update_elem(bpf_map__fd(skel_->maps.samples), &k, empty.get(), BPF_ANY);
  }

  int ifindex_;
  bench_xdp* skel_ = nullptr;
  int replaced_fd_ = -1;  // the program the sink replaced, put back when it goes
};

// A namespace with the wire veth (wire <-> gen) and a running data plane.
class Bed {
 public:
  explicit Bed(uint32_t queues)
      : queues_(queues),
        ns_name_(own_prefix() + "p" + std::to_string(queues)),
        leftover_(Leftover::Kind::Namespace, ns_name_) {
    ns_ = std::make_unique<Netns>(ns_name_);
    const std::string n = ns_->name();
    const std::string q = " numtxqueues " + std::to_string(queues) + " numrxqueues " + std::to_string(queues);
    must(ns_->exec("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"));
    must("ip -n " + n + " link add wire" + q + " type veth peer name gen" + q);
    must("ip -n " + n + " addr add 192.0.2.1/24 dev wire");
    must("ip -n " + n + " link set wire up && ip -n " + n + " link set gen up && ip -n " + n + " link set lo up");
    InNetns in(*ns_);
    try {
      start_dataplane(queues);
    } catch (...) {
      dp_.reset();  // in the namespace: the data plane finds its interfaces by index
      throw;
    }
  }
  ~Bed() {
    if (dp_) {
      InNetns in(*ns_);
      dp_.reset();
    }
  }

  SaSpec out_spec() const { return sa_spec(Direction::Out, "192.0.2.1", "192.0.2.2", 0x1001, key_); }
  SaSpec in_spec(uint32_t i) const { return sa_spec(Direction::In, "192.0.2.2", "192.0.2.1", 0x2001 + i, key_); }

  const Netns& ns() const { return *ns_; }
  Dataplane& dp() { return *dp_; }
  uint32_t queues() const { return queues_; }
  const uint8_t* gen_mac() const { return gen_mac_; }
  const uint8_t* wire_mac() const { return wire_mac_; }
  int gen_cpu(uint32_t i) const { return gen_cpus_[i % gen_cpus_.size()]; }
  std::string placement() const {
    std::string s;
    for (uint32_t i = 0; i < queues_; ++i) {
      s += (i ? ", " : "") + std::string("gen") + std::to_string(i) + "@cpu" + std::to_string(gen_cpu(i));
      s += " worker" + std::to_string(i) + "@cpu" +
           (i < worker_cpus_.size() ? std::to_string(worker_cpus_[i]) : std::string("any"));
    }
    return s;
  }

 private:
  // Inside the namespace.
  void start_dataplane(uint32_t queues) {
    const std::string n = ns_->name();
    link::mac_of("gen", gen_mac_);
    link::mac_of("wire", wire_mac_);
    char mac[32];
    std::snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", gen_mac_[0], gen_mac_[1], gen_mac_[2], gen_mac_[3],
                  gen_mac_[4], gen_mac_[5]);
    // The peer's MAC is known: the worker finds its next hop without ARP.
    must("ip -n " + n + " neigh add 192.0.2.2 lladdr " + mac + " dev wire nud permanent");
    const std::vector<int> cpus = allowed_cpus();
    Dataplane::Options o;
    o.wire_ifname = "wire";
    o.queues = queues;
    o.cookie = kCookie;
    // One worker: on the second CPU, the generator on the first.  Two: one per CPU.
    if (cpus.size() >= 2) o.cpus = queues == 1 ? std::vector<int>{cpus[1]} : std::vector<int>{cpus[0], cpus[1]};
    worker_cpus_ = o.cpus;
    gen_cpus_ = cpus.size() >= 2 ? std::vector<int>{cpus[0], cpus[1]} : std::vector<int>{-1, -1};
    dp_ = std::make_unique<Dataplane>(o);
    dp_->start();
    key_.resize(20);
    RAND_bytes(key_.data(), static_cast<int>(key_.size()));
    dp_->install_sa(kOutHandle, out_spec());
    for (uint32_t i = 0; i < queues; ++i) dp_->install_sa(in_handle(i), in_spec(i));
    CompiledPolicy cp{};
    cp.id = 1;
    cp.spec.dir = Direction::Out;
    cp.spec.src = IpPrefix::parse("10.1.0.0/24");
    cp.spec.dst = IpPrefix::parse("10.2.0.0/24");
    cp.spec.action = PolicyAction::Protect;
    cp.spec.sa_handle = kOutHandle;
    cp.offload_handle = kOutHandle;
    load_spd(dp_->programs().spd_trie_fd(), dp_->programs().spd_entries_fd(), compile_spd({cp}), nullptr);
  }

  uint32_t queues_;
  std::string ns_name_;
  Leftover leftover_;  // a forced exit deletes the namespace
  std::unique_ptr<Netns> ns_;
  std::unique_ptr<Dataplane> dp_;
  std::vector<uint8_t> key_;
  uint8_t gen_mac_[6]{}, wire_mac_[6]{};
  std::vector<int> worker_cpus_, gen_cpus_;
};

// CPU time of this process's worker threads (named ov2-worker<N>), seconds:
// their own work plus the kernel work done in their context (AF_XDP TX, veth,
// the sink's NAPI run from their syscalls).
double worker_cpu_seconds() {
  double sum = 0;
  DIR* d = opendir("/proc/self/task");
  if (!d) return 0;
  while (dirent* e = readdir(d)) {
    const std::string task = std::string("/proc/self/task/") + e->d_name;
    if (e->d_name[0] == '.' || e2e::read_file(task + "/comm").rfind("ov2-worker", 0) != 0) continue;
    sum += std::strtod(e2e::read_file(task + "/schedstat").c_str(), nullptr) * 1e-9;
  }
  closedir(d);
  return sum;
}

struct Baseline {
  double wall = 0;  // raw records/s
  double cpu = 0;   // raw records per CPU-second
};

struct Result {
  double pps = 0;       // matched frames/s at the sink (wall clock)
  double cpu_pps = 0;   // matched frames per second of worker CPU time
  double busy = 0;      // worker CPU seconds per wall second (summed over workers)
  std::string problem;  // not empty: no number (why)
  std::string detail;   // input losses etc.
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Rates at the sink: medians over t.runs windows.  The windows are sleeps
// that a signal ends early (and the run with them: bench_interrupt.h).
void sink_rate(const Sink& sink, const Timing& t, Result* r) {
  using clock = std::chrono::steady_clock;
  interruptible_sleep(std::chrono::milliseconds(300));  // rings fill, caches warm
  const double window = std::max(0.5, t.seconds_per_run * 2);
  std::vector<double> rates, cpu_rates, busy;
  for (int i = 0; i < t.runs; ++i) {
    const uint64_t a = sink.counter(kMatched);
    const double cpu_a = worker_cpu_seconds();
    const auto ta = clock::now();
    interruptible_sleep(std::chrono::duration<double>(window));
    const uint64_t b = sink.counter(kMatched);
    const double cpu = worker_cpu_seconds() - cpu_a;
    const double wall = std::chrono::duration<double>(clock::now() - ta).count();
    rates.push_back(static_cast<double>(b - a) / wall);
    cpu_rates.push_back(static_cast<double>(b - a) / std::max(cpu, 1e-6));
    busy.push_back(cpu / wall);
  }
  r->pps = median(rates);
  r->cpu_pps = median(cpu_rates);
  r->busy = median(busy);
}

// Frames the kernel dropped at the workers' sockets (RX ring full: the
// generator offers more than the workers take).
uint64_t xsk_drops(const DataplaneCounters& c) {
  uint64_t dropped = 0;
  for (const auto& s : c.wire_sockets) dropped += s.rx_dropped;
  for (const auto& s : c.nic_sockets) dropped += s.rx_dropped;
  return dropped;
}

std::string input_losses(uint64_t before, const DataplaneCounters& after) {
  return "offered beyond what the workers took (XSK rx_dropped) " + std::to_string(xsk_drops(after) - before);
}

// Decap of `size`-byte inner packets on every queue.
Result run_decap(Bed& bed, uint32_t size, const Timing& t) {
  InNetns in(bed.ns());
  const std::vector<uint8_t> plain = plaintext_packet(size);
  const uint32_t out_len = ETH_HLEN + OV2_SHIM_SIZE + size;
  Sink sink(link::index_of("ov2"), out_len, OV2_SHIM_ETHERTYPE, 1u << 16);
  const int gen_if = link::index_of("gen");
  const uint64_t drops0 = xsk_drops(bed.dp().counters());
  std::vector<std::unique_ptr<Generator>> gens;
  for (uint32_t i = 0; i < bed.queues(); ++i) {
    SaSpec spec = bed.in_spec(i);  // the peer's outbound view of our inbound SA
    spec.dir = Direction::Out;
    esp::OutboundSa sealer(spec);
    gens.push_back(std::make_unique<Generator>(
        bed.ns(), sink.gen_prog_fd(), gen_if, esp_frame(sealer, plain, bed.wire_mac(), bed.gen_mac()), bed.gen_cpu(i)));
  }
  Result r;
  sink_rate(sink, t, &r);
  for (auto& g : gens) g->stop();
  for (auto& g : gens)
    if (g->error()) r.problem = std::string("LIVE_FRAMES generator failed: ") + strerror(g->error());
  r.detail = input_losses(drops0, bed.dp().counters());
  // Check the samples: shim with our cookie and CryptoDone+SUCCESS, inner packet byte for byte.
  const auto samples = sink.samples();
  if (samples.empty() && r.problem.empty()) r.problem = "no output frame was sampled";
  for (const auto& s : samples) {
    ov2_shim shim;
    std::memcpy(&shim, s.data() + ETH_HLEN, sizeof shim);
    bool ok = s.size() == out_len && shim.cookie == kCookie && shim.rx_info == OV2_RX_CRYPTO_DONE &&
              std::equal(plain.begin(), plain.end(), s.begin() + ETH_HLEN + OV2_SHIM_SIZE);
    bool known_sa = false;
    for (uint32_t i = 0; i < bed.queues(); ++i) known_sa |= shim.sa_handle == in_handle(i);
    if ((!ok || !known_sa) && r.problem.empty()) r.problem = "a sampled output frame is not the decrypted input";
  }
  return r;
}

// Encap of `size`-byte plaintext packets (one generator on ov2, one queue).
Result run_encap(Bed& bed, uint32_t size, const Timing& t) {
  InNetns in(bed.ns());
  const std::vector<uint8_t> plain = plaintext_packet(size);
  esp::OutboundSa scratch(bed.out_spec());
  const size_t esp_len = esp_frame(scratch, plain, bed.gen_mac(), bed.wire_mac()).size();
  Sink sink(link::index_of("gen"), static_cast<uint32_t>(esp_len), ETH_P_IP, 1u << 16);
  // The host's frame into ov2 as ov2_tx sees it on ov2-nic.
  std::vector<uint8_t> frame(ETH_HLEN + plain.size());
  link::mac_of("ov2-nic", frame.data());
  link::mac_of("ov2", frame.data() + 6);
  frame[12] = 0x08;
  frame[13] = 0x00;
  std::memcpy(frame.data() + ETH_HLEN, plain.data(), plain.size());
  const uint64_t drops0 = xsk_drops(bed.dp().counters());
  Generator gen(bed.ns(), sink.gen_prog_fd(), link::index_of("ov2"), frame, bed.gen_cpu(0));
  Result r;
  sink_rate(sink, t, &r);
  gen.stop();
  if (gen.error()) r.problem = std::string("LIVE_FRAMES generator failed: ") + strerror(gen.error());
  r.detail = input_losses(drops0, bed.dp().counters());
  // Check the samples: ESP to the peer that opens with the SA into the plaintext.
  SaSpec in_spec = bed.out_spec();
  in_spec.dir = Direction::In;
  esp::InboundSa opener(in_spec);
  const auto samples = sink.samples();
  if (samples.empty() && r.problem.empty()) r.problem = "no output frame was sampled";
  for (auto s : samples) {
    bool ok = s.size() == esp_len && std::equal(s.begin(), s.begin() + 6, bed.gen_mac()) &&
              std::equal(s.begin() + 6, s.begin() + 12, bed.wire_mac());
    if (ok) {
      esp::Packet p{s.data() + ETH_HLEN, static_cast<uint32_t>(s.size() - ETH_HLEN), ETH_HLEN, 0};
      const auto res = opener.decapsulate(p, esp::monotonic_now_ns());
      ok = res.reason == esp::Reason::Ok && p.len == plain.size() && std::equal(plain.begin(), plain.end(), p.data);
    }
    if (!ok && r.problem.empty()) r.problem = "a sampled output frame is not valid ESP of the input";
  }
  return r;
}

// key: pipeline_<dir>_mpps_<size>[suffix]; with a baseline also the ratios.
void add_result(Report& report, const std::string& dir, const std::string& size, const std::string& suffix,
                const Result& r, const Baseline* raw, const std::string& note) {
  const std::string key = "pipeline_" + dir + "_mpps_" + size + suffix;
  if (!r.problem.empty()) {
    report.add_note(key, r.problem);
    return;
  }
  char busy[64];
  std::snprintf(busy, sizeof busy, "; workers on CPU %.0f%% of the time", r.busy * 100);
  report.add(key, r.pps / 1e6, "Mpps", note + busy + "; " + r.detail);
  report.add("pipeline_" + dir + "_mpps_per_worker_cpu_" + size + suffix, r.cpu_pps / 1e6, "Mpps",
             "per second of worker CPU time");
  if (!raw) return;
  report.add("pipeline_" + dir + "_ratio_" + size + suffix, r.pps / raw->wall, "ratio",
             "pipeline pps / raw AES-128-GCM records/s (wall clock, shared machine)");
  report.add("pipeline_" + dir + "_cpu_ratio_" + size + suffix, r.cpu_pps / raw->cpu, "ratio",
             "per CPU-second: pipeline pps per worker CPU-s / raw records per CPU-s");
}

}  // namespace

void run_pipeline_benchmarks(Report& report, const Timing& t, const std::vector<std::string>& cases) {
  auto wanted = [&](const std::string& c) {
    return cases.empty() || std::find(cases.begin(), cases.end(), c) != cases.end();
  };
  const uint32_t sizes[] = {64, 1400};
  Baseline raw[2];
  set_stage("pipeline: AES-128-GCM baselines", true);
  for (int i = 0; i < 2; ++i) {
    raw[i].wall = raw_aead_records_per_s("AES-128-GCM", sizes[i], t);
    raw[i].cpu = raw_aead_records_per_s("AES-128-GCM", sizes[i], t, true);
    report.add("pipeline_raw_records_per_s_" + std::to_string(sizes[i]), raw[i].wall, "records/s",
               "AES-128-GCM baseline of the pipeline ratios (wall clock)");
    report.add("pipeline_raw_records_per_cpu_s_" + std::to_string(sizes[i]), raw[i].cpu, "records/s",
               "the same per CPU-second of the measuring thread");
  }
  double one_worker_64 = 0;
  {
    set_stage("pipeline: setting up 1 worker", true);
    Bed bed(1);
    const std::string where = "1 worker; " + bed.placement();
    for (int i = 0; i < 2; ++i) {
      const std::string sz = std::to_string(sizes[i]);
      if (wanted("encap" + sz)) {
        set_stage("pipeline: encap" + sz + " (1 worker)", true);
        const Result e = run_encap(bed, sizes[i], t);
        add_result(report, "encap", sz, "", e, &raw[i], where);
      }
      if (wanted("decap" + sz) || (i == 0 && wanted("scaling"))) {
        set_stage("pipeline: decap" + sz + " (1 worker)", true);
        const Result d = run_decap(bed, sizes[i], t);
        add_result(report, "decap", sz, "", d, &raw[i], where);
        if (i == 0 && d.problem.empty()) one_worker_64 = d.pps;
      }
    }
  }
  if (wanted("scaling")) {
    set_stage("pipeline: scaling, decap64 (2 workers)", true);
    Bed bed(2);
    const Result d = run_decap(bed, 64, t);
    add_result(report, "decap", "64", "_2_workers", d, nullptr,
               "2 workers, one SA each (RFC 9611 style); " + bed.placement());
    if (d.problem.empty() && one_worker_64 > 0)
      report.add("scaling_2_workers_ratio", d.pps / one_worker_64, "ratio",
                 "decap 64 B, 2 workers / 1 worker; 2 CPUs shared by generators and workers");
  }
}

}  // namespace ov2::bench
