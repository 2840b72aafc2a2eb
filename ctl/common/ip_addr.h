// IPv4/IPv6 addresses and prefixes, as the control plane and the ESP engine
// use them (network byte order in `bytes`, IPv4 in the first four bytes).
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

namespace ov2 {

enum class Family : uint8_t { V4 = 4, V6 = 6 };

struct IpAddr {
  Family family = Family::V4;
  std::array<uint8_t, 16> bytes{};

  // Parses "192.0.2.1" or "2001:db8::1"; throws ov2::Error(InvalidArgument).
  static IpAddr parse(std::string_view text);
  static IpAddr any(Family family) { return IpAddr{family, {}}; }
  std::string to_string() const;
  size_t size() const { return family == Family::V4 ? 4 : 16; }
  bool is_any() const;
  auto operator<=>(const IpAddr&) const = default;
};

struct IpPrefix {
  IpAddr addr;
  uint8_t len = 0;

  // Parses "10.0.0.0/24", "2001:db8::/32", or a bare address (full length).
  // Host bits must be zero; throws ov2::Error(InvalidArgument) otherwise.
  static IpPrefix parse(std::string_view text);
  std::string to_string() const;
  bool contains(const IpAddr& a) const;
  bool contains(const IpPrefix& p) const { return p.len >= len && contains(p.addr); }
  auto operator<=>(const IpPrefix&) const = default;
};

}  // namespace ov2
