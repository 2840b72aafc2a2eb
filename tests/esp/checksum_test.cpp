// The Internet checksum (RFC 1071) of ip_checksum.h: the 8-bytes-at-a-time
// sum against the plain big-endian word loop it replaced, for every length
// and alignment, and the RFC's own example.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "esp/ip_checksum.h"

namespace ov2::esp::test {
namespace {

uint32_t word_loop(const uint8_t* p, size_t n, uint32_t acc) {
  for (; n >= 2; p += 2, n -= 2) acc += wire::be16(p);
  if (n) acc += uint32_t(p[0]) << 8;
  return acc;
}

TEST(InternetChecksum, FoldsLikeTheWordLoopForEveryLengthAndAlignment) {
  std::mt19937 rng(7);
  std::vector<uint8_t> buf(1600 + 8);
  for (auto& b : buf) b = uint8_t(rng());
  for (size_t align = 0; align < 8; ++align)
    for (size_t n = 0; n <= 1600; n += (n < 80 ? 1 : 37)) {
      const uint32_t acc = rng() & 0xffffff;
      ASSERT_EQ(wire::fold(wire::sum16(buf.data() + align, n, acc)),
                wire::fold(word_loop(buf.data() + align, n, acc)))
          << "length " << n << " alignment " << align;
    }
}

TEST(InternetChecksum, AllOnesAndAllZerosKeepTheirDistinctResults) {
  // 0x0000 and 0xffff are the same number in one's complement, but a sum of
  // only zeros folds to 0 (checksum 0xffff) and a sum of 0xffff words to
  // 0xffff (checksum 0): both must come out as the word loop has them.
  const std::vector<uint8_t> zeros(64, 0), ones(64, 0xff);
  EXPECT_EQ(wire::fold(wire::sum16(zeros.data(), zeros.size())), 0xffff);
  EXPECT_EQ(wire::fold(wire::sum16(ones.data(), ones.size())), 0x0000);
  EXPECT_EQ(wire::fold(wire::sum16(ones.data(), 3)), wire::fold(word_loop(ones.data(), 3, 0)));
}

TEST(InternetChecksum, Rfc1071Example) {
  // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2 (checksum 220d).
  const uint8_t bytes[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
  EXPECT_EQ(wire::fold(wire::sum16(bytes, sizeof bytes)), uint16_t(~0xddf2));
}

TEST(InternetChecksum, Ipv4HeaderChecksumVerifiesToZero) {
  uint8_t h[20] = {0x45, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 64, 1, 0xaa, 0xbb, 192, 0, 2, 1, 198, 51, 100, 7};
  wire::set_ipv4_checksum(h);
  EXPECT_EQ(wire::fold(wire::sum16(h, 20)), 0);
  // A known header (Wikipedia's IPv4 checksum example): checksum b861.
  uint8_t w[20] = {0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
                   0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7};
  wire::set_ipv4_checksum(w);
  EXPECT_EQ(wire::be16(w + 10), 0xb861);
}

}  // namespace
}  // namespace ov2::esp::test
