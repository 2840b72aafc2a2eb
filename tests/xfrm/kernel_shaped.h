// Netlink messages in the kernel's layout, for the tests that cannot get the
// real thing here (this kernel has no ESP: no SA exists to be read back or to
// expire): nlmsghdr + body as the kernel starts a message (nlmsg_put with the
// body size), and the xfrm_usersa_info body of an SA.
#pragma once

#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/xfrm.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "common/ip_addr.h"

namespace ov2::xfrm::test {

template <typename T>
std::span<const uint8_t> bytes_of(const T& v) {
  return {reinterpret_cast<const uint8_t*>(&v), sizeof(T)};
}

template <typename Body>
std::vector<uint8_t> kernel_message(uint16_t type, const Body& body) {
  std::vector<uint8_t> msg(NLMSG_LENGTH(sizeof(Body)), 0);
  auto* h = reinterpret_cast<nlmsghdr*>(msg.data());
  h->nlmsg_len = static_cast<uint32_t>(msg.size());
  h->nlmsg_type = type;
  h->nlmsg_seq = 77;
  h->nlmsg_pid = 4242;
  std::memcpy(NLMSG_DATA(h), &body, sizeof(Body));
  return msg;
}

// An ESP tunnel SA src -> dst (reqid 9, no lifetime limits, added and used at fixed times).
inline xfrm_usersa_info state_body(uint8_t af, const char* src, const char* dst, uint32_t spi) {
  xfrm_usersa_info si{};
  const IpAddr s = IpAddr::parse(src), d = IpAddr::parse(dst);
  std::memcpy(&si.id.daddr, d.bytes.data(), d.size());
  std::memcpy(&si.saddr, s.bytes.data(), s.size());
  si.id.spi = htonl(spi);
  si.id.proto = IPPROTO_ESP;
  si.family = af;
  si.mode = XFRM_MODE_TUNNEL;
  si.reqid = 9;
  si.lft.soft_byte_limit = si.lft.hard_byte_limit = XFRM_INF;
  si.lft.soft_packet_limit = si.lft.hard_packet_limit = XFRM_INF;
  si.curlft.add_time = 1764730000;
  si.curlft.use_time = 1764730005;
  return si;
}

}  // namespace ov2::xfrm::test
