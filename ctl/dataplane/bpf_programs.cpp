// The four BPF programs from their skeletons; see bpf_programs.h.
#include "dataplane/bpf_programs.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include "common/error.h"
#include "ov2_deliver.skel.h"
#include "ov2_tx.skel.h"
#include "ov2_verdict.skel.h"
#include "ov2_wire.skel.h"

namespace ov2 {
namespace {

// Fixed TC filter identity on ov2's ingress, so a leftover of a crashed
// daemon is found and replaced rather than stacked.
constexpr uint32_t kTcHandle = 1;
constexpr uint32_t kTcPriority = 1;

[[noreturn]] void fail_kernel(const std::string& what, int err) {
  fail(ErrorCode::Kernel, what + ": " + std::strerror(err < 0 ? -err : err));
}

std::string interface_name(int ifindex) {
  char name[IF_NAMESIZE] = {};
  if (if_indextoname(static_cast<unsigned>(ifindex), name) == nullptr) return "ifindex " + std::to_string(ifindex);
  return name;
}

// Name of a loaded program by id ("" if it vanished meanwhile).
std::string program_name_by_id(uint32_t prog_id) {
  int fd = bpf_prog_get_fd_by_id(prog_id);
  if (fd < 0) return "";
  bpf_prog_info info = {};
  uint32_t len = sizeof(info);
  std::string name;
  if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) name = info.name;
  close(fd);
  return name;
}

// The id of a loaded program (0 if its fd cannot be asked).
uint32_t program_id(int prog_fd) {
  bpf_prog_info info = {};
  uint32_t len = sizeof(info);
  return bpf_obj_get_info_by_fd(prog_fd, &info, &len) == 0 ? info.id : 0;
}

// Attaches an XDP program in driver mode.  A program already there with the
// same name is ours from an earlier run and is replaced atomically; anybody
// else's program is left alone and reported.
void attach_xdp(int ifindex, int prog_fd, const char* prog_name) {
  const std::string where = std::string(prog_name) + " on " + interface_name(ifindex);
  uint32_t old_id = 0;
  int err = bpf_xdp_query_id(ifindex, XDP_FLAGS_DRV_MODE, &old_id);
  if (err) fail_kernel("querying the XDP program of " + interface_name(ifindex), err);
  if (old_id == 0) {
    err = bpf_xdp_attach(ifindex, prog_fd, XDP_FLAGS_DRV_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST, nullptr);
    if (err) fail_kernel("attaching XDP " + where, err);
    return;
  }
  const std::string old_name = program_name_by_id(old_id);
  if (old_name != prog_name)
    fail(ErrorCode::Kernel, "attaching XDP " + where + ": another XDP program ('" + old_name + "', id " +
                                std::to_string(old_id) + ") is attached; detach it first (ip link set dev " +
                                interface_name(ifindex) + " xdp off)");
  int old_fd = bpf_prog_get_fd_by_id(old_id);
  if (old_fd < 0) fail_kernel("opening the leftover XDP program on " + interface_name(ifindex), errno);
  LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = old_fd);
  err = bpf_xdp_attach(ifindex, prog_fd, XDP_FLAGS_DRV_MODE | XDP_FLAGS_REPLACE, &opts);
  close(old_fd);
  if (err) fail_kernel("replacing the leftover XDP program with " + where, err);
}

// Removes our XDP program only if it is still the one attached.  Asked
// first: the kernel refuses a REPLACE detach whose expected program is not
// the attached one, and libbpf prints that refusal ("Kernel error message:
// Active program does not match expected") -- noise on every stop after
// somebody else replaced or removed ours (a restarted daemon that took over
// a leftover, `ip link set dev X xdp off`).  XDP_FLAGS_REPLACE still guards
// the moment between the query and the detach.
void detach_xdp(int ifindex, int prog_fd) {
  uint32_t attached = 0;
  if (bpf_xdp_query_id(ifindex, XDP_FLAGS_DRV_MODE, &attached) != 0 || attached == 0) return;
  if (program_id(prog_fd) != attached) return;
  LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = prog_fd);
  bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE | XDP_FLAGS_REPLACE, &opts);
}

void attach_tc_ingress(int ifindex, int prog_fd, const char* prog_name) {
  const std::string where = std::string(prog_name) + " on " + interface_name(ifindex) + " ingress";
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  int err = bpf_tc_hook_create(&hook);
  if (err && err != -EEXIST) fail_kernel("creating the clsact qdisc for " + where, err);

  // Only an existing clsact can hold a leftover filter (and querying a fresh
  // one just makes libbpf log "Cannot find specified filter chain").
  LIBBPF_OPTS(bpf_tc_opts, query, .handle = kTcHandle, .priority = kTcPriority);
  if (err == -EEXIST && bpf_tc_query(&hook, &query) == 0) {
    const std::string old_name = program_name_by_id(query.prog_id);
    if (old_name != prog_name)
      fail(ErrorCode::Kernel, "attaching TC " + where + ": handle 1 priority 1 holds another program ('" + old_name +
                                  "'); remove it first (tc filter del dev " + interface_name(ifindex) + " ingress)");
  }
  LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd, .flags = BPF_TC_F_REPLACE, .handle = kTcHandle,
              .priority = kTcPriority);
  err = bpf_tc_attach(&hook, &opts);
  if (err) fail_kernel("attaching TC " + where, err);
}

// Removes our filter only if it still runs our program; the clsact qdisc stays
// (other filters may live on it).
void detach_tc_ingress(int ifindex, int prog_fd) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  LIBBPF_OPTS(bpf_tc_opts, query, .handle = kTcHandle, .priority = kTcPriority);
  if (bpf_tc_query(&hook, &query) != 0) return;
  if (query.prog_id == 0 || program_id(prog_fd) != query.prog_id) return;
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
  bpf_tc_detach(&hook, &opts);
}

std::vector<uint64_t> sum_percpu_counters(const bpf_map* map, uint32_t entries, const char* what) {
  const int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) fail_kernel("counting possible CPUs", cpus);
  std::vector<uint64_t> per_cpu(static_cast<size_t>(cpus));
  std::vector<uint64_t> sums(entries, 0);
  const int fd = bpf_map__fd(map);
  for (uint32_t i = 0; i < entries; ++i) {
    if (bpf_map_lookup_elem(fd, &i, per_cpu.data()) != 0) fail_kernel(std::string("reading ") + what, errno);
    for (uint64_t v : per_cpu) sums[i] += v;
  }
  return sums;
}

uint64_t random_cookie() {
  uint64_t cookie = 0;
  while (cookie == 0) {
    if (getrandom(&cookie, sizeof(cookie), 0) != static_cast<ssize_t>(sizeof(cookie)))
      fail_kernel("getrandom for the shim cookie", errno);
  }
  return cookie;
}

template <typename Skel>
struct SkeletonDeleter;
template <>
struct SkeletonDeleter<::ov2_wire> {
  void operator()(::ov2_wire* s) const { ov2_wire__destroy(s); }
};
template <>
struct SkeletonDeleter<::ov2_tx> {
  void operator()(::ov2_tx* s) const { ov2_tx__destroy(s); }
};
template <>
struct SkeletonDeleter<::ov2_deliver> {
  void operator()(::ov2_deliver* s) const { ov2_deliver__destroy(s); }
};
template <>
struct SkeletonDeleter<::ov2_verdict> {
  void operator()(::ov2_verdict* s) const { ov2_verdict__destroy(s); }
};
template <typename Skel>
using SkeletonPtr = std::unique_ptr<Skel, SkeletonDeleter<Skel>>;

// open + load of one skeleton; `before_load` may set rodata.
template <typename Skel, typename Open, typename Load, typename BeforeLoad>
SkeletonPtr<Skel> open_and_load(const char* name, Open open, Load load, BeforeLoad before_load) {
  SkeletonPtr<Skel> skel(open());
  if (!skel) fail_kernel(std::string("opening BPF program ") + name, errno);
  before_load(skel.get());
  int err = load(skel.get());
  if (err) fail_kernel(std::string("loading BPF program ") + name + " (run as root; see the verifier log above)", err);
  return skel;
}

}  // namespace

struct BpfPrograms::Impl {
  SkeletonPtr<::ov2_wire> wire;
  SkeletonPtr<::ov2_tx> tx;
  SkeletonPtr<::ov2_deliver> deliver;
  SkeletonPtr<::ov2_verdict> verdict;
  uint64_t cookie = 0;
  int wire_ifindex = 0;
  int host_ifindex = 0;
  int nic_ifindex = 0;
  bool host_xdp_attached = false;
  bool host_tc_attached = false;
  // put/delete of inbound SAs write and count under it (inbound_dests).
  std::mutex inbound_mutex;
  // How many inbound SAs of each encapsulation every destination has: the
  // daemon is the only writer of sa_map and inbound_dests, so the counts are
  // kept here and inbound_dests is written only when one of them goes 0 -> 1
  // or 1 -> 0 (it holds 1 or 0 per encapsulation, which is all ov2_wire reads).
  struct DestHash {
    size_t operator()(const ov2_sa_key& k) const noexcept {
      return std::hash<std::string_view>{}(std::string_view(reinterpret_cast<const char*>(&k), sizeof k));
    }
  };
  struct DestEqual {
    bool operator()(const ov2_sa_key& a, const ov2_sa_key& b) const noexcept {
      return std::memcmp(&a, &b, sizeof a) == 0;
    }
  };
  std::unordered_map<ov2_sa_key, ov2_dest_sas, DestHash, DestEqual> dest_counts;
};

namespace {

// The inbound_dests key of an inbound SA's destination: SPI 0, family, address.
ov2_sa_key destination_key(const ov2_sa_key& sa) {
  ov2_sa_key k = sa;
  k.spi_be = 0;
  return k;
}

uint32_t& sas_of_kind(ov2_dest_sas& counts, bool udp_encap) { return udp_encap ? counts.udp_encap : counts.esp; }

// What inbound_dests holds for a destination with these counts: 1 or 0 per encapsulation.
ov2_dest_sas presence(const ov2_dest_sas& counts) {
  return ov2_dest_sas{counts.esp != 0 ? 1u : 0u, counts.udp_encap != 0 ? 1u : 0u};
}

[[noreturn]] void sa_map_write_failed(int err) {
  if (err == E2BIG)
    fail(ErrorCode::ResourceExhausted,
         "inbound SA map is full (" + std::to_string(OV2_MAX_SAS) + " SAs); delete unused SAs first");
  fail_kernel("writing the inbound SA map", err);
}

}  // namespace

void BpfPrograms::write_destination(const ov2_sa_key& dest, const ov2_dest_sas& counts) {
  const int fd = bpf_map__fd(impl_->wire->maps.inbound_dests);
  const ov2_dest_sas entry = presence(counts);
  const bool empty = entry.esp == 0 && entry.udp_encap == 0;
  const int rc = empty ? bpf_map_delete_elem(fd, &dest) : bpf_map_update_elem(fd, &dest, &entry, BPF_ANY);
  if (rc != 0 && !(empty && errno == ENOENT)) {
    const int err = errno;
    if (err == E2BIG)
      fail(ErrorCode::ResourceExhausted, "inbound destination map is full (" + std::to_string(OV2_MAX_INBOUND_DESTS) +
                                             " local addresses with inbound SAs); delete unused SAs first");
    fail_kernel("writing the inbound destination map", err);
  }
}

void BpfPrograms::count_destination(const ov2_sa_key& dest, bool udp_encap, int delta) {
  auto it = impl_->dest_counts.try_emplace(dest).first;
  ov2_dest_sas after = it->second;
  uint32_t& n = sas_of_kind(after, udp_encap);
  n = static_cast<uint32_t>(static_cast<int64_t>(n) + delta);
  const bool flips = (n == 0) != (sas_of_kind(it->second, udp_encap) == 0);
  try {
    if (flips) write_destination(dest, after);  // 0 -> 1 or 1 -> 0: what ov2_wire sees changes
  } catch (...) {
    if (it->second.esp == 0 && it->second.udp_encap == 0) impl_->dest_counts.erase(it);
    throw;
  }
  if (after.esp == 0 && after.udp_encap == 0)
    impl_->dest_counts.erase(it);
  else
    it->second = after;
}

std::optional<ov2_dest_sas> BpfPrograms::inbound_destination(const ov2_sa_key& sa_key) const {
  const ov2_sa_key k = destination_key(sa_key);
  ov2_dest_sas n{};
  if (bpf_map_lookup_elem(bpf_map__fd(impl_->wire->maps.inbound_dests), &k, &n) != 0) return std::nullopt;
  return n;
}

ov2_dest_sas BpfPrograms::inbound_destination_sas(const ov2_sa_key& sa_key) const {
  std::lock_guard lock(impl_->inbound_mutex);
  auto it = impl_->dest_counts.find(destination_key(sa_key));
  return it == impl_->dest_counts.end() ? ov2_dest_sas{} : it->second;
}

std::string BpfPrograms::inbound_destinations_mismatch() const {
  std::lock_guard lock(impl_->inbound_mutex);
  const int fd = bpf_map__fd(impl_->wire->maps.inbound_dests);
  auto name = [](const ov2_sa_key& k) {
    std::string s = "family " + std::to_string(k.family) + " address";
    for (size_t i = 0; i < (k.family == OV2_AF_INET ? 4u : 16u); ++i) s += " " + std::to_string(k.daddr[i]);
    return s;
  };
  std::string out;
  size_t in_map = 0;
  ov2_sa_key key{}, prev{};
  for (bool first = true; bpf_map_get_next_key(fd, first ? nullptr : &prev, &key) == 0; first = false, prev = key) {
    ov2_dest_sas entry{};
    if (bpf_map_lookup_elem(fd, &key, &entry) == 0) {
      ++in_map;
      auto it = impl_->dest_counts.find(key);
      const ov2_dest_sas want = it == impl_->dest_counts.end() ? ov2_dest_sas{} : it->second;
      if (entry.esp != presence(want).esp || entry.udp_encap != presence(want).udp_encap)
        out += name(key) + ": map {" + std::to_string(entry.esp) + ", " + std::to_string(entry.udp_encap) +
               "}, counted {" + std::to_string(want.esp) + ", " + std::to_string(want.udp_encap) + "}; ";
    }
  }
  if (in_map != impl_->dest_counts.size())
    out +=
        std::to_string(in_map) + " destinations in the map, " + std::to_string(impl_->dest_counts.size()) + " counted";
  return out;
}

BpfPrograms::BpfPrograms(const Options& opts) : impl_(std::make_unique<Impl>()) {
  impl_->cookie = opts.cookie != 0 ? opts.cookie : random_cookie();
  const uint64_t cookie = impl_->cookie;
  const uint32_t sa_capacity = opts.inbound_sa_capacity;
  impl_->wire = open_and_load<::ov2_wire>("ov2_wire", ov2_wire__open, ov2_wire__load, [sa_capacity](::ov2_wire* s) {
    if (sa_capacity != 0) bpf_map__set_max_entries(s->maps.sa_map, sa_capacity);
  });
  impl_->tx = open_and_load<::ov2_tx>("ov2_tx", ov2_tx__open, ov2_tx__load, [](::ov2_tx*) {});
  impl_->deliver = open_and_load<::ov2_deliver>("ov2_deliver", ov2_deliver__open, ov2_deliver__load,
                                                [cookie](::ov2_deliver* s) { s->rodata->cookie = cookie; });
  impl_->verdict =
      open_and_load<::ov2_verdict>("ov2_verdict", ov2_verdict__open, ov2_verdict__load, [](::ov2_verdict*) {});
  set_verdict_mark(opts.verdict_mark);
}

BpfPrograms::~BpfPrograms() { detach_all(); }

void BpfPrograms::attach_wire(int ifindex) {
  attach_xdp(ifindex, wire_prog_fd(), "ov2_wire");
  impl_->wire_ifindex = ifindex;
  // ov2_verdict sends reassembled non-ESP UDP (IKE) to this device's ingress.
  __atomic_store_n(&impl_->verdict->data->wire_ifindex, static_cast<uint32_t>(ifindex), __ATOMIC_RELAXED);
}

void BpfPrograms::attach_offload(int host_ifindex, int nic_ifindex) {
  // Host side first (receive path complete before anything is sent to it),
  // then the worker side.  On failure, undo what this call attached.
  try {
    attach_xdp(host_ifindex, deliver_prog_fd(), "ov2_deliver");
    impl_->host_ifindex = host_ifindex;
    impl_->host_xdp_attached = true;
    attach_tc_ingress(host_ifindex, verdict_prog_fd(), "ov2_verdict");
    impl_->host_tc_attached = true;
    attach_xdp(nic_ifindex, tx_prog_fd(), "ov2_tx");
    impl_->nic_ifindex = nic_ifindex;
  } catch (...) {
    if (impl_->host_tc_attached) detach_tc_ingress(host_ifindex, verdict_prog_fd());
    if (impl_->host_xdp_attached) detach_xdp(host_ifindex, deliver_prog_fd());
    impl_->host_tc_attached = impl_->host_xdp_attached = false;
    impl_->host_ifindex = 0;
    throw;
  }
}

void BpfPrograms::detach_all() {
  __atomic_store_n(&impl_->verdict->data->wire_ifindex, 0u, __ATOMIC_RELAXED);
  if (impl_->wire_ifindex) detach_xdp(impl_->wire_ifindex, wire_prog_fd());
  if (impl_->nic_ifindex) detach_xdp(impl_->nic_ifindex, tx_prog_fd());
  if (impl_->host_tc_attached) detach_tc_ingress(impl_->host_ifindex, verdict_prog_fd());
  if (impl_->host_xdp_attached) detach_xdp(impl_->host_ifindex, deliver_prog_fd());
  impl_->wire_ifindex = impl_->nic_ifindex = impl_->host_ifindex = 0;
  impl_->host_tc_attached = impl_->host_xdp_attached = false;
}

void BpfPrograms::put_inbound_sa(const ov2_sa_key& key, const ov2_sa_value& value) {
  std::lock_guard lock(impl_->inbound_mutex);
  const int fd = bpf_map__fd(impl_->wire->maps.sa_map);
  const ov2_sa_key dest = destination_key(key);
  const bool is_natt = value.flags & OV2_SA_F_UDP_ENCAP;
  // A new SA: one BPF_NOEXIST update (plus the destination entry when it is the first SA of its kind
  // there, written first: a full destination map changes nothing).
  count_destination(dest, is_natt, +1);
  if (bpf_map_update_elem(fd, &key, &value, BPF_NOEXIST) == 0) return;
  int err = errno;
  if (err == EEXIST) {
    // A replacement: it counts for its destination only when it changes the encapsulation.
    ov2_sa_value old{};
    if (bpf_map_lookup_elem(fd, &key, &old) != 0) {
      err = errno;
    } else if (bpf_map_update_elem(fd, &key, &value, BPF_EXIST) != 0) {
      err = errno;
    } else {
      count_destination(dest, (old.flags & OV2_SA_F_UDP_ENCAP) != 0, -1);  // the same kind: back where it was
      return;
    }
  }
  count_destination(dest, is_natt, -1);
  sa_map_write_failed(err);
}

void BpfPrograms::put_new_inbound_sas(const std::vector<ov2_sa_key>& keys, const std::vector<ov2_sa_value>& values) {
  if (keys.size() != values.size()) fail(ErrorCode::Internal, "put_new_inbound_sas: as many keys as values");
  std::lock_guard lock(impl_->inbound_mutex);
  const int fd = bpf_map__fd(impl_->wire->maps.sa_map);
  // Destinations first, as put_inbound_sa does; undone below (and by count_destination itself) on failure.
  size_t counted = 0;
  const auto uncount = [&] {
    for (size_t i = 0; i < counted; ++i)
      count_destination(destination_key(keys[i]), (values[i].flags & OV2_SA_F_UDP_ENCAP) != 0, -1);
  };
  try {
    for (; counted < keys.size(); ++counted)
      count_destination(destination_key(keys[counted]), (values[counted].flags & OV2_SA_F_UDP_ENCAP) != 0, +1);
  } catch (...) {
    uncount();
    throw;
  }
  size_t written = 0;
  int err = 0;
  while (written < keys.size()) {
    uint32_t count = static_cast<uint32_t>(std::min<size_t>(kWireBatch, keys.size() - written));
    LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
    const int rc = bpf_map_update_batch(fd, &keys[written], &values[written], &count, &opts);
    written = std::min(keys.size(), written + count);  // the kernel says how many it wrote, also at an error
    if (rc != 0) {
      err = errno;
      break;
    }
  }
  if (err == 0) return;
  for (size_t i = 0; i < written; ++i) bpf_map_delete_elem(fd, &keys[i]);
  uncount();
  sa_map_write_failed(err);
}

void BpfPrograms::delete_inbound_sa(const ov2_sa_key& key) {
  std::lock_guard lock(impl_->inbound_mutex);
  ov2_sa_value old{};
  if (bpf_map_lookup_and_delete_elem(bpf_map__fd(impl_->wire->maps.sa_map), &key, &old) != 0) {
    const int err = errno;
    if (err == ENOENT) fail(ErrorCode::NotFound, "inbound SA not in the wire map");
    fail_kernel("deleting from the inbound SA map", err);
  }
  count_destination(destination_key(key), (old.flags & OV2_SA_F_UDP_ENCAP) != 0, -1);
}

bool BpfPrograms::lookup_inbound_sa(const ov2_sa_key& key, ov2_sa_value* value) const {
  ov2_sa_value found{};
  if (bpf_map_lookup_elem(bpf_map__fd(impl_->wire->maps.sa_map), &key, &found) != 0) {
    const int err = errno;
    if (err == ENOENT) return false;
    fail_kernel("reading the inbound SA map", err);
  }
  if (value) *value = found;
  return true;
}

int BpfPrograms::spd_trie_fd() const { return bpf_map__fd(impl_->tx->maps.spd_trie); }
int BpfPrograms::spd_entries_fd() const { return bpf_map__fd(impl_->tx->maps.spd_entries); }
int BpfPrograms::wire_xsks_map_fd() const { return bpf_map__fd(impl_->wire->maps.xsks_map); }
int BpfPrograms::tx_xsks_map_fd() const { return bpf_map__fd(impl_->tx->maps.xsks_map); }
int BpfPrograms::events_fd() const { return bpf_map__fd(impl_->verdict->maps.events); }

void BpfPrograms::set_verdict_mark(uint32_t mark) {
  // .data is mmapped by libbpf: the program sees the store on its next run.
  __atomic_store_n(&impl_->verdict->data->verdict_mark, mark, __ATOMIC_RELAXED);
}

uint64_t BpfPrograms::cookie() const { return impl_->cookie; }

std::vector<uint64_t> BpfPrograms::wire_counters() const {
  return sum_percpu_counters(impl_->wire->maps.wire_counters, OV2_WIRE_COUNTER_MAX, "ov2_wire counters");
}
std::vector<uint64_t> BpfPrograms::tx_counters() const {
  return sum_percpu_counters(impl_->tx->maps.tx_counters, OV2_TX_COUNTER_MAX, "ov2_tx counters");
}
std::vector<uint64_t> BpfPrograms::deliver_counters() const {
  return sum_percpu_counters(impl_->deliver->maps.deliver_counters, OV2_DELIVER_COUNTER_MAX, "ov2_deliver counters");
}
std::vector<uint64_t> BpfPrograms::verdict_counters() const {
  return sum_percpu_counters(impl_->verdict->maps.verdict_counters, OV2_VERDICT_COUNTER_MAX, "ov2_verdict counters");
}
std::vector<uint64_t> BpfPrograms::verdict_status_counters() const {
  return sum_percpu_counters(impl_->verdict->maps.status_counters, OV2_CRYPTO_STATUS_COUNT,
                             "ov2_verdict status counters");
}

int BpfPrograms::wire_prog_fd() const { return bpf_program__fd(impl_->wire->progs.ov2_wire); }
int BpfPrograms::tx_prog_fd() const { return bpf_program__fd(impl_->tx->progs.ov2_tx); }
int BpfPrograms::deliver_prog_fd() const { return bpf_program__fd(impl_->deliver->progs.ov2_deliver); }
int BpfPrograms::verdict_prog_fd() const { return bpf_program__fd(impl_->verdict->progs.ov2_verdict); }

}  // namespace ov2
