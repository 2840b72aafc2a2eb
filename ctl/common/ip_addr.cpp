#include "common/ip_addr.h"

#include <arpa/inet.h>

#include <charconv>

#include "common/error.h"

namespace ov2 {

IpAddr IpAddr::parse(std::string_view text) {
  std::string s(text);
  IpAddr a;
  if (s.find(':') != std::string::npos) {
    a.family = Family::V6;
    if (inet_pton(AF_INET6, s.c_str(), a.bytes.data()) != 1)
      fail(ErrorCode::InvalidArgument, "'" + s + "' is not a valid IPv6 address");
  } else {
    a.family = Family::V4;
    if (inet_pton(AF_INET, s.c_str(), a.bytes.data()) != 1)
      fail(ErrorCode::InvalidArgument, "'" + s + "' is not a valid IPv4 address");
  }
  return a;
}

std::string IpAddr::to_string() const {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(family == Family::V4 ? AF_INET : AF_INET6, bytes.data(), buf, sizeof buf);
  return buf;
}

bool IpAddr::is_any() const {
  for (size_t i = 0; i < size(); ++i)
    if (bytes[i] != 0) return false;
  return true;
}

IpPrefix IpPrefix::parse(std::string_view text) {
  IpPrefix p;
  const auto slash = text.find('/');
  p.addr = IpAddr::parse(text.substr(0, slash));
  const unsigned max = p.addr.family == Family::V4 ? 32 : 128;
  if (slash == std::string_view::npos) {
    p.len = static_cast<uint8_t>(max);
    return p;
  }
  const auto lentext = text.substr(slash + 1);
  unsigned len = 0;
  auto [ptr, ec] = std::from_chars(lentext.data(), lentext.data() + lentext.size(), len);
  if (ec != std::errc() || ptr != lentext.data() + lentext.size() || lentext.empty() || len > max)
    fail(ErrorCode::InvalidArgument,
         "'" + std::string(text) + "': prefix length must be a number from 0 to " + std::to_string(max));
  p.len = static_cast<uint8_t>(len);
  for (unsigned bit = len; bit < max; ++bit) {
    if (p.addr.bytes[bit / 8] & (0x80 >> (bit % 8)))
      fail(ErrorCode::InvalidArgument, "'" + std::string(text) + "' has host bits set; did you mean " +
                                           [&] {
                                             IpPrefix q = p;
                                             for (unsigned b = len; b < max; ++b)
                                               q.addr.bytes[b / 8] &= static_cast<uint8_t>(~(0x80 >> (b % 8)));
                                             return q.to_string();
                                           }() + "?");
  }
  return p;
}

std::string IpPrefix::to_string() const { return addr.to_string() + "/" + std::to_string(len); }

bool IpPrefix::contains(const IpAddr& a) const {
  if (a.family != addr.family) return false;
  for (unsigned bit = 0; bit < len; ++bit) {
    const uint8_t mask = static_cast<uint8_t>(0x80 >> (bit % 8));
    if ((a.bytes[bit / 8] & mask) != (addr.bytes[bit / 8] & mask)) return false;
  }
  return true;
}

}  // namespace ov2
