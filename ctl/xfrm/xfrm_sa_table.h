// The NIC engine's SA table: offload handle <-> the kernel's key of the SA
// (SPI, destination, protocol, family) plus the direction and what DELETE_SA,
// UPDATE_SA and statistics need later (source, reqid, device, ESN).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "common/ip_addr.h"
#include "model/sa_spec.h"
#include "xfrm/xfrm_messages.h"

namespace ov2::xfrm {

struct XfrmSaKey {
  uint32_t spi = 0;
  IpAddr dst;
  uint8_t proto = 50;  // IPPROTO_ESP
  Direction dir = Direction::Out;
  Family family() const { return dst.family; }
  auto operator<=>(const XfrmSaKey&) const = default;
};

struct XfrmSaEntry {
  XfrmSaKey key;
  IpAddr src;
  uint32_t reqid = 0;
  int ifindex = 0;
  OffloadKind offload = OffloadKind::Crypto;
  bool esn = false;
  Mode mode = Mode::Tunnel;
  SaId id() const { return SaId{key.dst, src, key.spi, key.proto}; }
};

class XfrmSaTable {
 public:
  // Adds an entry under `handle` (non-zero; the daemon's offload handle).
  // Throws ov2::Error(InvalidArgument) for handle 0, Exists for a handle or
  // (SPI, dst, proto, dir) already present.
  void insert(uint64_t handle, const XfrmSaEntry& entry);
  // The entry of a handle, or nullptr (the pointer lives until erase).
  const XfrmSaEntry* find(uint64_t handle) const;
  // The handle of a kernel SA key, if known.
  std::optional<uint64_t> find(const XfrmSaKey& key) const;
  // Removes a handle; false if unknown.
  bool erase(uint64_t handle);
  size_t size() const { return by_handle_.size(); }
  // Every handle, ascending.
  std::vector<uint64_t> handles() const;

 private:
  std::map<uint64_t, XfrmSaEntry> by_handle_;
  std::map<XfrmSaKey, uint64_t> by_key_;
};

// The table key of an SaSpec.
XfrmSaKey sa_key_of(const SaSpec& sa);

}  // namespace ov2::xfrm
