#include "xfrm/xfrm_sa_table.h"

#include <cstdio>

#include "common/error.h"

namespace ov2::xfrm {

namespace {
std::string key_text(const XfrmSaKey& k) {
  char spi[16];
  std::snprintf(spi, sizeof(spi), "0x%08x", k.spi);
  return std::string(k.dir == Direction::In ? "inbound" : "outbound") + " SA spi " + spi + " to " + k.dst.to_string();
}
}  // namespace

XfrmSaKey sa_key_of(const SaSpec& sa) { return XfrmSaKey{sa.spi, sa.dst, 50, sa.dir}; }

void XfrmSaTable::insert(uint64_t handle, const XfrmSaEntry& entry) {
  if (handle == 0) fail(ErrorCode::InvalidArgument, "offload handle 0 means \"no offload\" and cannot name an SA");
  if (by_handle_.count(handle))
    fail(ErrorCode::Exists, "offload handle " + std::to_string(handle) + " is already in use");
  if (by_key_.count(entry.key)) fail(ErrorCode::Exists, "the NIC engine already has the " + key_text(entry.key));
  by_handle_.emplace(handle, entry);
  by_key_.emplace(entry.key, handle);
}

const XfrmSaEntry* XfrmSaTable::find(uint64_t handle) const {
  auto it = by_handle_.find(handle);
  return it == by_handle_.end() ? nullptr : &it->second;
}

std::optional<uint64_t> XfrmSaTable::find(const XfrmSaKey& key) const {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return std::nullopt;
  return it->second;
}

std::vector<uint64_t> XfrmSaTable::handles() const {
  std::vector<uint64_t> out;
  out.reserve(by_handle_.size());
  for (const auto& [h, e] : by_handle_) out.push_back(h);
  return out;
}

bool XfrmSaTable::erase(uint64_t handle) {
  auto it = by_handle_.find(handle);
  if (it == by_handle_.end()) return false;
  by_key_.erase(it->second.key);
  by_handle_.erase(it);
  return true;
}

}  // namespace ov2::xfrm
