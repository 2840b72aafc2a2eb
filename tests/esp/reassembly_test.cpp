// Outer fragment reassembly (esp/reassembly.h): datagrams fragmented by scapy
// (an independent fragmenter) come back byte for byte in any order, up to
// 65535 bytes through the large buffers; the limits (entries, buffer, large
// buffers, fragments, 65535, timeout) and the overlap rules (IPv6: any
// overlap drops, RFC 5722; IPv4: differing bytes drop) hold.
#include "esp/reassembly.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <sstream>

#include "esp/esp_test_util.h"
#include "esp/path_mtu.h"

namespace ov2::esp::test {
namespace {

using Kind = Reassembly::Kind;

// The packets a scapy script prints in hex, one per line.
std::vector<Bytes> run_scapy(const std::string& script) {
  ProcessResult r = run_process({"/usr/bin/python3", "-c", script}, "");
  EXPECT_EQ(r.status, 0) << "python3-scapy missing? " << r.err;
  std::vector<Bytes> out;
  std::istringstream ss(r.out);
  std::string line;
  while (std::getline(ss, line)) out.push_back(from_hex(line));
  return out;
}

// Fragments of one datagram, as scapy's fragment()/fragment6() cut them; the
// datagram itself first.  `v6`: IPv6 with a fragment header.
std::vector<Bytes> scapy_fragments(bool v6, uint32_t payload, uint32_t mtu) {
  const std::string script =
      std::string("import sys\nfrom scapy.all import *\n") +
      (v6 ? "p = IPv6(src='fd00:2::1', dst='fd00:2::2', nh=50)/Raw(bytes((i * 7) % 251 for i in range(" +
                std::to_string(payload) +
                ")))\n"
                "d = raw(p)\n"
                "fs = fragment6(IPv6(src='fd00:2::1', dst='fd00:2::2')/IPv6ExtHdrFragment(id=0x1234, nh=50)/"
                "Raw(bytes((i * 7) % 251 for i in range(" +
                std::to_string(payload) + "))), " + std::to_string(mtu) + ")\n"
          : "p = IP(src='192.0.2.1', dst='192.0.2.2', proto=50, id=0x4242)/Raw(bytes((i * 7) % 251 for i in range(" +
                std::to_string(payload) +
                ")))\n"
                "d = raw(p)\n"
                "fs = fragment(IP(raw(p)), " +
                std::to_string(mtu - 20) + ")\n") +
      "print(d.hex())\nfor f in fs: print(raw(f).hex())\n";
  return run_scapy(script);
}

Reassembly::Limits small_limits() {
  Reassembly::Limits l;
  l.entries = 4;
  l.buffer_bytes = 4096;
  l.max_fragments = 8;
  l.timeout_ns = 1'000'000'000;
  return l;
}

TEST(Reassembly, ScapyIpv4FragmentsInAnyOrderGiveTheDatagramBackWithAFreshHeader) {
  std::vector<Bytes> v = scapy_fragments(false, 3000, 1400);
  ASSERT_EQ(v.size(), 4u);  // datagram + 3 fragments
  const Bytes datagram = v[0];
  std::vector<Bytes> frags(v.begin() + 1, v.end());
  std::mt19937 rng(7);
  for (int round = 0; round < 6; ++round) {
    std::shuffle(frags.begin(), frags.end(), rng);
    Reassembly r(small_limits());
    Bytes out(4096);
    for (size_t i = 0; i < frags.size(); ++i) {
      Reassembly::Result res = r.add(frags[i].data(), uint32_t(frags[i].size()), 0, out.data(), 4096);
      if (i + 1 < frags.size()) {
        EXPECT_EQ(res.kind, Kind::Held);
        continue;
      }
      ASSERT_EQ(res.kind, Kind::Complete);
      ASSERT_EQ(res.len, datagram.size());
      // scapy's datagram has the same id and header; checksum recomputed by us.
      EXPECT_EQ(Bytes(out.begin(), out.begin() + res.len), datagram) << "round " << round;
    }
    EXPECT_EQ(r.in_progress(), 0u);
  }
}

TEST(Reassembly, ScapyIpv6FragmentsGiveTheDatagramBackWithoutTheFragmentHeader) {
  std::vector<Bytes> v = scapy_fragments(true, 2500, 1280);
  ASSERT_GE(v.size(), 3u);
  const Bytes datagram = v[0];
  Reassembly r(small_limits());
  Bytes out(4096);
  Reassembly::Result res{Kind::Held};
  for (size_t i = v.size() - 1; i >= 1; --i) res = r.add(v[i].data(), uint32_t(v[i].size()), 0, out.data(), 4096);
  ASSERT_EQ(res.kind, Kind::Complete);
  EXPECT_EQ(Bytes(out.begin(), out.begin() + res.len), datagram);
}

TEST(Reassembly, ReassemblesInPlaceIntoTheLastFragmentsOwnBuffer) {
  std::vector<Bytes> v = scapy_fragments(false, 2000, 1000);
  Reassembly r(small_limits());
  for (size_t i = 1; i + 1 < v.size(); ++i)
    ASSERT_EQ(r.add(v[i].data(), uint32_t(v[i].size()), 0, nullptr, 0).kind, Kind::Held);
  Bytes last = v.back();
  last.resize(4096);
  Reassembly::Result res = r.add(last.data(), uint32_t(v.back().size()), 0, last.data(), 4096);
  ASSERT_EQ(res.kind, Kind::Complete);
  EXPECT_EQ(Bytes(last.begin(), last.begin() + res.len), v[0]);
}

// A hand-made IPv4 fragment: id, offset (bytes), MF, payload filled with `fill`.
Bytes v4frag(uint16_t id, uint32_t offset, bool more, uint32_t len, uint8_t fill, uint8_t src_last = 1) {
  Bytes b(20 + len, fill);
  b[0] = 0x45;
  b[2] = uint8_t((20 + len) >> 8);
  b[3] = uint8_t(20 + len);
  b[4] = uint8_t(id >> 8);
  b[5] = uint8_t(id);
  const uint16_t fo = uint16_t((offset / 8) | (more ? 0x2000 : 0));
  b[6] = uint8_t(fo >> 8);
  b[7] = uint8_t(fo);
  b[8] = 64;
  b[9] = 50;
  b[10] = b[11] = 0;
  const uint8_t addrs[8] = {192, 0, 2, src_last, 192, 0, 2, 2};
  std::copy(addrs, addrs + 8, b.begin() + 12);
  return b;
}

Bytes v6frag(uint32_t id, uint32_t offset, bool more, uint32_t len, uint8_t fill) {
  Bytes b(48 + len, fill);
  std::fill(b.begin(), b.begin() + 48, 0);
  b[0] = 0x60;
  b[4] = uint8_t((8 + len) >> 8);
  b[5] = uint8_t(8 + len);
  b[6] = 44;
  b[7] = 64;
  b[8] = 0xfd;
  b[23] = 1;
  b[24] = 0xfd;
  b[39] = 2;
  b[40] = 50;
  const uint16_t fo = uint16_t(offset | (more ? 1 : 0));
  b[42] = uint8_t(fo >> 8);
  b[43] = uint8_t(fo);
  b[44] = uint8_t(id >> 24);
  b[47] = uint8_t(id);
  return b;
}

Reassembly::Result add(Reassembly& r, const Bytes& f, Bytes* out = nullptr, uint64_t now = 0) {
  static Bytes scratch(65536 + 100);
  Bytes& o = out ? *out : scratch;
  return r.add(f.data(), uint32_t(f.size()), now, o.data(), uint32_t(o.size()));
}

TEST(Reassembly, Ipv4OverlapWithDifferentBytesDropsTheDatagramIdenticalBytesAreKept) {
  Reassembly r(small_limits());
  EXPECT_EQ(add(r, v4frag(1, 0, true, 16, 0xaa)).kind, Kind::Held);
  Reassembly::Result res = add(r, v4frag(1, 8, true, 16, 0xbb));  // bytes 8..15 differ
  EXPECT_EQ(res.kind, Kind::Dropped);
  EXPECT_EQ(res.why, FragmentDrop::Overlap);
  EXPECT_EQ(r.in_progress(), 0u);
  // The same range again with other bytes is a conflict too.
  EXPECT_EQ(add(r, v4frag(3, 0, true, 16, 0xaa)).kind, Kind::Held);
  res = add(r, v4frag(3, 0, true, 16, 0xab));
  EXPECT_EQ(res.why, FragmentDrop::Overlap);
  EXPECT_EQ(r.in_progress(), 0u);
  // Same overlap with the same bytes: fine, and the datagram completes.
  EXPECT_EQ(add(r, v4frag(2, 0, true, 16, 0xaa)).kind, Kind::Held);
  EXPECT_EQ(add(r, v4frag(2, 8, true, 16, 0xaa)).kind, Kind::Held);
  Bytes out(4096);
  res = add(r, v4frag(2, 24, false, 5, 0xaa), &out);
  ASSERT_EQ(res.kind, Kind::Complete);
  EXPECT_EQ(res.len, 20u + 29u);
  EXPECT_EQ(be16(out.data() + 6), 0);
  EXPECT_TRUE(std::all_of(out.begin() + 20, out.begin() + 49, [](uint8_t c) { return c == 0xaa; }));
}

TEST(Reassembly, Ipv6AnyOverlapDropsTheDatagramButAnExactDuplicateIsIgnored) {
  Reassembly r(small_limits());
  EXPECT_EQ(add(r, v6frag(9, 0, true, 16, 0xaa)).kind, Kind::Held);
  EXPECT_EQ(add(r, v6frag(9, 0, true, 16, 0xaa)).kind, Kind::Held) << "exact duplicate";
  EXPECT_EQ(r.in_progress(), 1u);
  Reassembly::Result res = add(r, v6frag(9, 8, true, 16, 0xaa));  // same bytes, still an overlap
  EXPECT_EQ(res.kind, Kind::Dropped);
  EXPECT_EQ(res.why, FragmentDrop::Overlap);
  EXPECT_EQ(r.in_progress(), 0u);
  EXPECT_EQ(add(r, v6frag(10, 0, true, 16, 0xaa)).kind, Kind::Held);
  res = add(r, v6frag(10, 0, true, 16, 0xbb));  // same place, other bytes: not a duplicate
  EXPECT_EQ(res.why, FragmentDrop::Overlap);
  EXPECT_EQ(r.in_progress(), 0u);
}

TEST(Reassembly, Ipv6AtomicFragmentIsTheDatagramWithoutTheTable) {
  Reassembly r(small_limits());
  Bytes f = v6frag(5, 0, false, 30, 0x11);
  Bytes out(4096);
  Reassembly::Result res = add(r, f, &out);
  ASSERT_EQ(res.kind, Kind::Complete);
  EXPECT_EQ(res.len, 70u);
  EXPECT_EQ(out[6], 50) << "next header from the fragment header";
  EXPECT_EQ(be16(out.data() + 4), 30);
  EXPECT_EQ(r.in_progress(), 0u);
}

TEST(Reassembly, MalformedFragmentsAreDroppedWithoutTouchingTheTable) {
  Reassembly r(small_limits());
  auto why = [&](const Bytes& f) {
    Reassembly::Result res = add(r, f);
    EXPECT_EQ(res.kind, Kind::Dropped);
    return res.why;
  };
  EXPECT_EQ(why(v4frag(1, 0, true, 12, 0)), FragmentDrop::Malformed) << "non-last not a multiple of 8";
  EXPECT_EQ(why(v4frag(1, 0, true, 0, 0)), FragmentDrop::Malformed) << "empty non-last";
  Bytes shortv4 = v4frag(1, 8, true, 16, 0);
  shortv4[3] = 10;  // total length below the header
  EXPECT_EQ(why(shortv4), FragmentDrop::Malformed);
  Bytes truncated = v4frag(1, 8, true, 16, 0);
  truncated.resize(30);
  EXPECT_EQ(why(truncated), FragmentDrop::Malformed) << "total length beyond the bytes";
  Bytes v6short = v6frag(1, 8, true, 16, 0);
  v6short.resize(44);
  EXPECT_EQ(why(v6short), FragmentDrop::Malformed) << "fragment header cut off";
  Bytes v6nofrag = v6frag(1, 8, true, 16, 0);
  v6nofrag[6] = 50;  // no fragment header at all
  EXPECT_EQ(why(v6nofrag), FragmentDrop::Malformed);
  EXPECT_EQ(r.in_progress(), 0u);
  // Conflicting ends.
  EXPECT_EQ(add(r, v4frag(3, 16, false, 8, 0)).kind, Kind::Held);
  EXPECT_EQ(why(v4frag(3, 40, false, 8, 0)), FragmentDrop::Malformed);
  EXPECT_EQ(add(r, v4frag(4, 16, false, 8, 0)).kind, Kind::Held);
  EXPECT_EQ(why(v4frag(4, 24, true, 8, 0)), FragmentDrop::Malformed) << "data beyond the last fragment";
  EXPECT_EQ(r.in_progress(), 0u);
}

TEST(Reassembly, DatagramsBeyond65535OrTheBufferAreTooBig) {
  Reassembly::Limits l = small_limits();
  Reassembly r(l);
  Reassembly::Result res = add(r, v4frag(1, 65528, false, 8, 0));  // ends at 65536 + header
  EXPECT_EQ(res.kind, Kind::Dropped);
  EXPECT_EQ(res.why, FragmentDrop::TooBig);
  res = add(r, v4frag(2, 4096, true, 8, 0));  // beyond the 4096-byte buffer
  EXPECT_EQ(res.why, FragmentDrop::TooBig);
  res = add(r, v6frag(3, 65528, false, 16, 0));
  EXPECT_EQ(res.why, FragmentDrop::TooBig);
  EXPECT_EQ(r.in_progress(), 0u);
  // Complete, but larger than the room the caller has.
  EXPECT_EQ(add(r, v4frag(4, 0, true, 1000, 0)).kind, Kind::Held);
  Bytes small(500);
  res = add(r, v4frag(4, 1000, false, 8, 0), &small);
  EXPECT_EQ(res.why, FragmentDrop::TooBig);
  EXPECT_EQ(r.in_progress(), 0u);
}

TEST(Reassembly, TableFullTooManyFragmentsAndTimeoutAreEnforced) {
  Reassembly r(small_limits());  // 4 entries, 8 fragments, 1 s
  for (uint16_t id = 1; id <= 4; ++id) EXPECT_EQ(add(r, v4frag(id, 8, true, 8, 0), nullptr, 100).kind, Kind::Held);
  Reassembly::Result res = add(r, v4frag(5, 8, true, 8, 0), nullptr, 100);
  EXPECT_EQ(res.why, FragmentDrop::TableFull);
  EXPECT_EQ(r.expire(100 + 999'999'999), 0u);
  EXPECT_EQ(r.expire(100 + 1'000'000'000), 4u);
  EXPECT_EQ(r.in_progress(), 0u);
  // The same id from another source is another datagram.
  EXPECT_EQ(add(r, v4frag(7, 8, true, 8, 0, 1)).kind, Kind::Held);
  EXPECT_EQ(add(r, v4frag(7, 8, true, 8, 0, 9)).kind, Kind::Held);
  EXPECT_EQ(r.in_progress(), 2u);
  for (uint32_t i = 2; i <= 8; ++i) EXPECT_EQ(add(r, v4frag(7, i * 8, true, 8, 0)).kind, Kind::Held);
  res = add(r, v4frag(7, 80, true, 8, 0));
  EXPECT_EQ(res.why, FragmentDrop::TooManyFragments);
  EXPECT_EQ(r.in_progress(), 1u);
}

TEST(Reassembly, WorkerOutboundFragmentsReassembleToTheEspPacket) {
  // ipv4_fragment (the transmit side) and Reassembly (the receive side) agree.
  Bytes pkt = v4frag(0x77, 0, false, 2900, 0);
  pkt[6] = pkt[7] = 0;
  for (size_t i = 20; i < pkt.size(); ++i) pkt[i] = uint8_t(i * 13);
  const uint32_t k = ipv4_fragment_count(pkt.data(), uint32_t(pkt.size()), 1500);
  ASSERT_EQ(k, 2u);  // 2900 + 20 bytes in 1480 + 1440
  Reassembly r(small_limits());
  Bytes out(4096);
  Reassembly::Result res{Kind::Held};
  for (uint32_t i = k; i-- > 0;) {
    Bytes f(1500);
    f.resize(ipv4_fragment(pkt.data(), 1500, i, f.data()));
    res = add(r, f, &out);
  }
  ASSERT_EQ(res.kind, Kind::Complete);
  Bytes got(out.begin(), out.begin() + res.len);
  got[10] = got[11] = pkt[10] = pkt[11] = 0;
  EXPECT_EQ(got, pkt);
}

// ---------------------------------------------------------------------------
// Datagrams bigger than buffer_bytes: large buffers.

Reassembly::Limits large_limits(uint32_t large_entries) {
  Reassembly::Limits l = small_limits();  // 4 entries of 4096 bytes, 8 fragments
  l.large_entries = large_entries;
  l.large_fragments = 64;
  return l;
}

// Reassembles `frags` in `order`; the result and the bytes written where it says.
Reassembly::Result add_all(Reassembly& r, const std::vector<Bytes>& frags, Bytes* frame, Bytes* large, Bytes* got) {
  Reassembly::Result res{Kind::Held};
  for (const Bytes& f : frags) {
    EXPECT_EQ(res.kind, Kind::Held) << "complete before the last fragment";
    res = r.add(f.data(), uint32_t(f.size()), 0, frame->data(), uint32_t(frame->size()), large->data(),
                uint32_t(large->size()));
  }
  if (res.kind == Kind::Complete) {
    const Bytes& where = res.large ? *large : *frame;
    got->assign(where.begin(), where.begin() + res.len);
  }
  return res;
}

TEST(Reassembly, ScapyFragmentsOfDatagramsUpTo65535BytesComeBackWholeInTheLargeOutputInAnyOrder) {
  // IPv4: 6000 bytes (what a 9000-byte-MTU peer's ESP looks like at 1500)
  // and the biggest datagram there is (20 + 65515 bytes, 45 fragments).
  for (uint32_t payload : {6000u, 65515u}) {
    std::vector<Bytes> v = scapy_fragments(false, payload, 1500);
    ASSERT_GE(v.size(), 5u);
    const Bytes datagram = v[0];
    ASSERT_EQ(datagram.size(), 20u + payload);
    std::vector<Bytes> frags(v.begin() + 1, v.end());
    std::mt19937 rng(payload);
    for (int round = 0; round < 4; ++round) {
      if (round > 0) std::shuffle(frags.begin(), frags.end(), rng);  // round 0: in order, the first one first
      Reassembly r(large_limits(1));
      Bytes frame(4096), large(65536 + 100), got;
      const Reassembly::Result res = add_all(r, frags, &frame, &large, &got);
      ASSERT_EQ(res.kind, Kind::Complete) << payload << " round " << round;
      EXPECT_TRUE(res.large);
      EXPECT_EQ(got, datagram) << payload << " round " << round;
      EXPECT_EQ(r.in_progress(), 0u);
      EXPECT_EQ(r.large_in_use(), 0u) << "the large buffer is free again";
    }
  }
  // IPv6: 65527 bytes after the fragment header (payload length 65535 with it).
  std::vector<Bytes> v = scapy_fragments(true, 65527, 1500);
  ASSERT_GE(v.size(), 45u);
  Reassembly r(large_limits(1));
  Bytes frame(4096), large(65536 + 100), got;
  std::vector<Bytes> frags(v.rbegin(), v.rend() - 1);  // last first
  const Reassembly::Result res = add_all(r, frags, &frame, &large, &got);
  ASSERT_EQ(res.kind, Kind::Complete);
  EXPECT_TRUE(res.large);
  EXPECT_EQ(got, v[0]);
}

TEST(Reassembly, ADatagramThatFitsTheFrameStillGoesThereWithLargeBuffersConfigured) {
  std::vector<Bytes> v = scapy_fragments(false, 3000, 1400);
  Reassembly r(large_limits(2));
  Bytes frame(4096), large(65536), got;
  const Reassembly::Result res = add_all(r, {v.begin() + 1, v.end()}, &frame, &large, &got);
  ASSERT_EQ(res.kind, Kind::Complete);
  EXPECT_FALSE(res.large);
  EXPECT_EQ(got, v[0]);
  EXPECT_EQ(r.large_in_use(), 0u) << "never needed one";
}

TEST(Reassembly, LargeBuffersAreSharedAndANewBigDatagramFindingNoneIsDroppedAsLargeBusy) {
  Reassembly r(large_limits(2));
  // Two datagrams reach past 4096 bytes: each takes a large buffer.
  EXPECT_EQ(add(r, v4frag(1, 0, true, 1000, 0x11)).kind, Kind::Held);
  EXPECT_EQ(r.large_in_use(), 0u);
  EXPECT_EQ(add(r, v4frag(1, 8000, true, 1000, 0x11)).kind, Kind::Held);
  EXPECT_EQ(r.large_in_use(), 1u);
  EXPECT_EQ(add(r, v4frag(2, 16000, true, 1000, 0x22)).kind, Kind::Held);
  EXPECT_EQ(r.large_in_use(), 2u);
  // A third one: dropped, whole (its first fragment was small and held).
  EXPECT_EQ(add(r, v4frag(3, 0, true, 8, 0x33)).kind, Kind::Held);
  Reassembly::Result res = add(r, v4frag(3, 5000, true, 8, 0x33));
  EXPECT_EQ(res.kind, Kind::Dropped);
  EXPECT_EQ(res.why, FragmentDrop::LargeBusy);
  EXPECT_EQ(r.in_progress(), 2u);
  // Datagram 1 completes: what it held before it grew (bytes 0..999) is there.
  for (uint32_t off = 1000; off < 8000; off += 1000)
    ASSERT_EQ(add(r, v4frag(1, off, true, 1000, 0x11)).kind, Kind::Held);
  Bytes frame(4096), large(65536);
  const Bytes last = v4frag(1, 9000, false, 10, 0x11);
  res = r.add(last.data(), uint32_t(last.size()), 0, frame.data(), 4096, large.data(), 65536);
  ASSERT_EQ(res.kind, Kind::Complete);
  EXPECT_TRUE(res.large);
  EXPECT_EQ(res.len, 20u + 9010u);
  EXPECT_EQ(be16(large.data() + 2), 9030);
  EXPECT_TRUE(std::all_of(large.begin() + 20, large.begin() + 9030, [](uint8_t c) { return c == 0x11; }));
  EXPECT_EQ(r.large_in_use(), 1u);
  // Its buffer serves the next big datagram; the timeout frees the other one.
  EXPECT_EQ(add(r, v4frag(4, 5000, true, 8, 0x44)).kind, Kind::Held);
  EXPECT_EQ(r.large_in_use(), 2u);
  EXPECT_EQ(r.expire(1'000'000'000), 2u);
  EXPECT_EQ(r.large_in_use(), 0u);
  EXPECT_EQ(r.in_progress(), 0u);
}

TEST(Reassembly, LargeDatagramsHaveTheirOwnFragmentLimitAndStillStopAt65535) {
  Reassembly r(large_limits(1));  // 8 fragments while small, 64 once large
  EXPECT_EQ(add(r, v4frag(1, 8000, true, 8, 0)).kind, Kind::Held);
  for (uint32_t i = 1; i < 64; ++i) ASSERT_EQ(add(r, v4frag(1, 8000 + i * 8, true, 8, 0)).kind, Kind::Held) << i;
  Reassembly::Result res = add(r, v4frag(1, 8000 + 64 * 8, true, 8, 0));
  EXPECT_EQ(res.why, FragmentDrop::TooManyFragments);
  EXPECT_EQ(r.large_in_use(), 0u);
  res = add(r, v4frag(2, 65512, false, 8, 0));  // 20 + 65520 bytes
  EXPECT_EQ(res.why, FragmentDrop::TooBig) << "above 65535, large buffers or not";
  EXPECT_EQ(r.large_in_use(), 0u);
  // Complete, but bigger than both outputs the caller has.
  EXPECT_EQ(add(r, v4frag(3, 0, true, 6000, 0)).kind, Kind::Held);
  Bytes frame(4096), large(5000);
  const Bytes last = v4frag(3, 6000, false, 8, 0);
  res = r.add(last.data(), uint32_t(last.size()), 0, frame.data(), 4096, large.data(), 5000);
  EXPECT_EQ(res.why, FragmentDrop::TooBig);
  EXPECT_EQ(r.in_progress(), 0u);
  EXPECT_EQ(r.large_in_use(), 0u);
}

// scapy's fragment6() of an IPv6 datagram whose extension headers `ext`
// (scapy layer names) come before the Fragment header; the datagram itself
// (the last of them naming ESP) first.
std::vector<Bytes> scapy_fragments_behind(const std::string& ext, uint32_t payload, uint32_t mtu) {
  const std::string data = "Raw(bytes((i * 7) % 251 for i in range(" + std::to_string(payload) + ")))";
  const std::string script =
      "from scapy.all import *\n"
      "hs = [" +
      ext +
      "]\n"
      "def chain(last_nh):\n"
      "  p = IPv6(src='fd00:2::1', dst='fd00:2::2')\n"
      "  for i, h in enumerate(hs):\n"
      "    h = h.copy()\n"
      "    if i + 1 == len(hs): h.nh = last_nh\n"
      "    p = p / h\n"
      "  return p\n"
      "print(raw(chain(50) / " +
      data +
      ").hex())\n"
      "for f in fragment6(chain(44) / IPv6ExtHdrFragment(id=0x1234, nh=50) / " +
      data + ", " + std::to_string(mtu) + "): print(raw(f).hex())\n";
  return run_scapy(script);
}

// RFC 8200 §4.5: the unfragmentable part (Hop-by-Hop, Destination Options,
// Routing) rides in every fragment and is kept from the first one; the
// datagram comes back byte for byte with the last of them naming ESP.
TEST(Reassembly, Ipv6FragmentsBehindExtensionHeadersKeepTheUnfragmentablePart) {
  for (const std::string ext : {"IPv6ExtHdrRouting()", "IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting()",
                                "IPv6ExtHdrDestOpt(options=[PadN(optdata=bytes(20))])"}) {
    SCOPED_TRACE(ext);
    std::vector<Bytes> v = scapy_fragments_behind(ext, 2500, 1280);
    ASSERT_GE(v.size(), 4u);
    Reassembly r(small_limits());
    Bytes out(4096);
    Reassembly::Result res{Kind::Held};
    for (size_t i = v.size() - 1; i >= 1; --i) res = r.add(v[i].data(), uint32_t(v[i].size()), 0, out.data(), 4096);
    ASSERT_EQ(res.kind, Kind::Complete);
    EXPECT_EQ(Bytes(out.begin(), out.begin() + res.len), v[0]);
    EXPECT_TRUE(Reassembly::is_fragment(v[1].data(), uint32_t(v[1].size())));
    EXPECT_FALSE(Reassembly::is_fragment(v[0].data(), uint32_t(v[0].size())));
  }
}

// A hand-made IPv6 fragment behind `ext` Destination Options headers of
// `units` (8 bytes + 8 * units each).
Bytes v6frag_behind(int ext, uint8_t units, uint32_t offset, bool more, uint32_t len) {
  Bytes f = v6frag(9, offset, more, len, 0x33);
  Bytes chain;
  for (int i = 0; i < ext; ++i) {
    Bytes h((units + 1u) * 8u, 0);
    h[0] = i + 1 < ext ? 60 : 44;
    h[1] = units;
    chain.insert(chain.end(), h.begin(), h.end());
  }
  if (ext > 0) f[6] = 60;
  f.insert(f.begin() + 40, chain.begin(), chain.end());
  const uint32_t pl = uint32_t(f.size() - 40);
  f[4] = uint8_t(pl >> 8);
  f[5] = uint8_t(pl);
  return f;
}

TEST(Reassembly, Ipv6AtomicFragmentBehindExtensionHeadersKeepsThem) {
  Reassembly r(small_limits());
  const Bytes f = v6frag_behind(2, 1, 0, false, 24);  // 40 + 2 * 16 + 8 + 24
  Bytes out(4096);
  Reassembly::Result res = add(r, f, &out);
  ASSERT_EQ(res.kind, Kind::Complete);
  EXPECT_EQ(res.len, 40u + 32u + 24u);
  EXPECT_EQ(out[6], 60);
  EXPECT_EQ(out[40], 60);
  EXPECT_EQ(out[56], 50) << "the last Destination Options header names what the Fragment header named";
  EXPECT_EQ(be16(out.data() + 4), 32 + 24);
  EXPECT_EQ(Bytes(out.begin() + 72, out.begin() + 96), Bytes(24, 0x33));
}

TEST(Reassembly, TruncatedOrTooLongExtensionHeaderChainsAreABadHeaderChain) {
  Reassembly r(small_limits());
  auto why = [&](const Bytes& f) {
    Reassembly::Result res = add(r, f);
    EXPECT_EQ(res.kind, Kind::Dropped);
    return res.why;
  };
  // Six headers, like ov2_wire, are walked; a seventh is too many.
  EXPECT_EQ(add(r, v6frag_behind(6, 0, 0, true, 16)).kind, Kind::Held);
  EXPECT_EQ(why(v6frag_behind(7, 0, 0, true, 16)), FragmentDrop::BadHeaderChain);
  // A header whose length runs past the packet.
  Bytes past = v6frag_behind(1, 0, 0, true, 16);
  past[41] = 40;
  EXPECT_EQ(why(past), FragmentDrop::BadHeaderChain);
  // The chain ends exactly where the packet does: no room for the fragment header.
  Bytes cut = v6frag_behind(2, 0, 0, true, 16);
  cut.resize(56);
  cut[4] = 0;
  cut[5] = 16;
  EXPECT_EQ(why(cut), FragmentDrop::Malformed);
  // An unfragmentable part beyond the 256 bytes kept for it.
  EXPECT_EQ(why(v6frag_behind(1, 27, 0, true, 16)), FragmentDrop::BadHeaderChain);  // 40 + 224
  EXPECT_EQ(add(r, v6frag_behind(1, 26, 16, true, 16)).kind, Kind::Held);           // 40 + 216: kept
  EXPECT_TRUE(Reassembly::is_fragment(past.data(), uint32_t(past.size()))) << "the table gets to drop it";
  EXPECT_EQ(r.in_progress(), 1u) << "one datagram (id 9) in progress";
}

}  // namespace
}  // namespace ov2::esp::test
