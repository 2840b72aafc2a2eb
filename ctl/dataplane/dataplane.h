// The AF_XDP data plane as one object the daemon drives.
//
// Ownership and threads (everything lives in the network namespace that was
// current when start() ran):
//   Dataplane owns, in start order:
//     BpfPrograms     the four programs and their maps (ov2_wire attached to
//                     the wire, ov2_tx/ov2_deliver/ov2_verdict via the device)
//     OffloadDevice   the veth pair ov2 / ov2-nic
//     SaRuntime       the SA table the workers read (lock-free; epochs)
//     NeighbourCache  next-hop MACs the workers read (lock-free; seqlocks)
//     NeighbourResolver   thread "resolver": rtnetlink route+neighbour lookups
//     Worker x queues     thread per queue: the packet loop (no locks, no
//                         allocation); its UMEM and two AF_XDP sockets
//     housekeeping thread frees retired SAs once no worker can see them
//   stop() (and the destructor) tear down in reverse: workers first, so no
//   packet path runs while anything it reads goes away.
//
// Control calls (install_sa, remove_sa, update_seq_hi, counters) may come from
// any thread; they serialize on SaRuntime's control lock, never on a worker.
//
// Namespace: start() binds everything to the calling thread's network
// namespace; call stop() (or destroy) from a thread in that same namespace,
// because the BPF detach goes by ifindex through the caller's netlink.
//
// Routes into the offload device may carry device().route_mtu()
// (`ip route add 10.2.0.0/24 dev ov2 mtu <route_mtu>`); without it the host
// sends up to the device MTU and learns the path MTU from the worker's ICMP
// errors (worker.h, esp/path_mtu.h).  The device MTU is larger so that
// decrypted packets plus the shim fit (offload_device.h).
//
// Several queues: each inbound SA's anti-replay window (single-threaded,
// esp.h) belongs to one worker, fixed deterministically as (handle slot %
// queues) the first time any worker looks at the SA; a bundle's transport SA
// belongs to its tunnel SA's owner.  On veth the queue an ESP packet arrives on
// is the queue the peer sent it from, so one SA's packets do arrive on several
// queues: a worker that receives ESP for an SA another worker owns copies the
// frame into that worker's handoff ring (handoff_ring.h: one SPSC ring per
// ordered pair of workers, allocated at start) and recycles its own frame; the
// owner drains its rings and processes those frames exactly like its own
// (counters rx-handed-off / rx-handoff-received; a full ring drops and counts
// rx-handoff-full).  An owner asleep in poll() is woken through its eventfd,
// signalled only when it announced that it sleeps.  One queue: no rings, no
// eventfd, no ownership check.  Outbound SAs are shared (crypto slots = queues).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/bpf_programs.h"
#include "dataplane/inbound_policy.h"
#include "dataplane/offload_device.h"
#include "dataplane/sa_runtime.h"
#include "dataplane/worker.h"
#include "model/sa_spec.h"

namespace ov2 {

struct DataplaneCounters {
  WorkerCounterArray worker{};                 // summed over workers
  std::vector<WorkerCounterArray> per_worker;  // by queue
  std::vector<XskPort::Stats> wire_sockets;    // kernel XSK statistics, by queue
  std::vector<XskPort::Stats> nic_sockets;
  std::vector<uint64_t> wire;            // ov2_wire_counter
  std::vector<uint64_t> tx;              // ov2_tx_counter
  std::vector<uint64_t> deliver;         // ov2_deliver_counter
  std::vector<uint64_t> verdict;         // ov2_verdict_counter
  std::vector<uint64_t> verdict_status;  // per CryptoStatus 0..7
  uint64_t neighbour_resolutions = 0;
  uint64_t worker_count(WorkerCounter c) const { return worker[static_cast<size_t>(c)]; }
};

class Dataplane {
 public:
  struct Options {
    std::string wire_ifname;               // required: the NIC (or veth) ESP goes out on
    std::string offload_dev = "ov2";       // host end of the offload device
    std::string offload_peer = "ov2-nic";  // worker end
    uint32_t queues = 1;                   // workers = veth queues = wire queues used
    std::vector<int> cpus;                 // cpus[i] pins worker i (shorter/empty: unpinned)
    uint32_t mtu = 0;             // route MTU into ov2; 0: wire MTU - worst-case ESP overhead (offload_device.h)
    uint32_t umem_frames = 4096;  // per worker
    uint32_t frame_size = 4096;   // 2048 or 4096
    uint32_t ring_size = 2048;    // rx/tx/fill/completion ring entries
    uint32_t batch = 64;
    uint32_t sa_capacity = OV2_MAX_SAS;  // handle slots (low 24 bits of a handle)
    uint32_t verdict_mark = 0;           // skb->mark on accepted decrypted packets
    uint64_t cookie = 0;                 // shim cookie; 0: random per start
    // Entries of each handoff ring (queues > 1; power of two); 0: twice
    // ring_size, so that a handed-off packet finds about as much buffering as
    // one its owner receives directly (its XSK RX ring plus the veth's queue;
    // with ring_size alone a 32 MiB TCP stream lost ~32 packets per run to
    // rx-handoff-full on the 2-core test machine, with twice none).  Memory:
    // queues * (queues - 1) rings of handoff_slots * (wire MTU + 86) bytes.
    uint32_t handoff_slots = 0;
  };

  explicit Dataplane(const Options& opts);
  ~Dataplane();  // stop()
  Dataplane(const Dataplane&) = delete;
  Dataplane& operator=(const Dataplane&) = delete;

  // Loads and attaches the programs, creates the offload device, starts the
  // resolver and the workers.  Throws ov2::Error; on failure nothing stays up.
  void start();
  // Stops the workers and removes everything start() created.  Idempotent.
  void stop();
  bool running() const { return running_; }

  // Installs an SA under the control plane's handle: the ESP object for the
  // workers first, then (inbound) the (SPI, dst) entry that makes ov2_wire
  // redirect its packets.  Throws ov2::Error (see SaRuntime::install).
  void install_sa(uint64_t handle, const SaSpec& spec);
  // Removes an SA (inbound: the wire entry first).  Throws ov2::Error(NotFound).
  void remove_sa(uint64_t handle);
  // True if an SA is installed under `handle`.
  bool has_sa(uint64_t handle) const { return sas_->contains(handle); }
  // Many inbound SAs at once (a restore, a batched sa.add; through
  // Engine::begin_batch): from begin_wire_batch() on, install_sa
  // keeps each inbound SA's ov2_wire entry back instead of writing it (a bpf
  // syscall per SA); commit_wire_batch() writes them all in batches
  // (BpfPrograms::put_new_inbound_sas: all-or-nothing; throws ov2::Error)
  // and ends the batch.  Until then ov2_wire passes those SAs' packets up
  // untouched, as before they were added.  discard_wire_batch() ends a batch
  // without writing it (the SAs stay in the workers' table: the caller
  // removes them).  `expected`: how many SAs are coming (a reserve).
  // Control thread only.
  void begin_wire_batch(size_t expected);
  void commit_wire_batch();
  void discard_wire_batch() noexcept { wire_batch_.reset(); }
  // UPDATE_SA (ESN high bits).  Throws NotFound / InvalidArgument.
  void update_seq_hi(uint64_t handle, uint32_t seq_hi);
  // Per-SA counters.  Throws NotFound.
  SaRuntimeCounters sa_counters(uint64_t handle) const { return sas_->counters(handle); }
  // Restart recovery: outbound SA `handle` sends `seq` next (call before any
  // policy steers packets to it).  False if it is not an installed outbound SA.
  bool set_outbound_next_seq(uint64_t handle, uint64_t seq) {
    esp::OutboundSa* sa = sas_->outbound(handle);
    if (sa == nullptr) return false;
    sa->set_next_seq(seq);
    return true;
  }
  // Outbound SAs asking to be deleted (sequence space / hard lifetime): a
  // walk over every SA slot; delete_requests_raised() tells when it is
  // worth it (it changes whenever an SA starts asking).
  std::vector<uint64_t> outbound_delete_requests() const { return sas_->outbound_delete_requests(); }
  uint64_t delete_requests_raised() const { return esp::delete_requests_raised(); }
  // SAs that counted a failed inbound packet since the last call, from every
  // worker (Worker::take_failed_sas); false: some were not noted, look at
  // every SA.  The daemon thread only.
  bool take_failed_sas(std::vector<uint64_t>& out);

  // Replaces the inbound SPD the workers check decrypted packets against
  // (inbound_policy.h; best first, as the control plane orders it).  Any time,
  // before or after start().  Throws std::bad_alloc only.
  void set_inbound_policies(const std::vector<CompiledPolicy>& ordered) { inbound_policies_->publish(ordered); }

  // Everything counted, summed (workers' own and the BPF programs').
  DataplaneCounters counters() const;

  // For the daemon's SPD loading (spd_compiler.h) and its event reader.  Valid
  // between start() and stop().
  BpfPrograms& programs() { return *programs_; }
  const OffloadDevice& device() const { return *device_; }
  // Reload of offload_device.mtu (OffloadDevice::set_route_mtu).  Throws ov2::Error; then nothing changed.
  void set_route_mtu(uint32_t route_mtu) {
    device_->set_route_mtu(route_mtu);
    opts_.mtu = route_mtu;
  }
  int wire_ifindex() const { return wire_ifindex_; }

 private:
  void housekeeping();

  struct WireBatch {
    std::vector<uint64_t> handles;
    std::vector<ov2_sa_key> keys;
    std::vector<ov2_sa_value> values;
    bool removed;  // an SA was removed meanwhile: commit writes only the ones still installed
                   // (no initializer: clang cannot use it in std::optional::emplace inside Dataplane)
  };

  Options opts_;
  bool running_ = false;
  std::optional<WireBatch> wire_batch_;
  int wire_ifindex_ = 0;
  std::unique_ptr<SaRuntime> sas_;
  std::unique_ptr<InboundPolicies> inbound_policies_;  // read by the workers under sas_'s epochs
  std::unique_ptr<NeighbourCache> neighbours_;
  // The peer install_sa last asked the neighbour cache to resolve (family, address): SAs to the same
  // peer in a row (a restore of many tunnels to one gateway) ask once, not once per SA (an eventfd write
  // and a wakeup of the resolver each).  Control thread only.
  std::array<uint8_t, 17> last_neighbour_request_{};
  std::unique_ptr<BpfPrograms> programs_;
  std::unique_ptr<OffloadDevice> device_;
  std::unique_ptr<NeighbourResolver> resolver_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<bool> stop_housekeeping_{false};
  std::thread housekeeping_;
};

}  // namespace ov2
