#include "esp/esp_test_util.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace ov2::esp::test {

Bytes from_hex(std::string_view hex) {
  Bytes out;
  int hi = -1;
  for (char c : hex) {
    int v;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
    else if (c == ' ' || c == '\n' || c == '\t' || c == ':') continue;
    else throw std::invalid_argument("bad hex character");
    if (hi < 0) {
      hi = v;
    } else {
      out.push_back(uint8_t(hi << 4 | v));
      hi = -1;
    }
  }
  if (hi >= 0) throw std::invalid_argument("odd number of hex digits");
  return out;
}

std::string to_hex(const uint8_t* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  s.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}
std::string to_hex(const Bytes& b) { return to_hex(b.data(), b.size()); }

Bytes key_bytes(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = uint8_t(seed + i * 7);
  return b;
}

const std::vector<Suite>& all_suites() {
  static const std::vector<Suite> suites = {
      {"aes_gcm_128", EncAlg::AesGcm128, AuthAlg::None},
      {"aes_gcm_192", EncAlg::AesGcm192, AuthAlg::None},
      {"aes_gcm_256", EncAlg::AesGcm256, AuthAlg::None},
      {"chacha20_poly1305", EncAlg::ChaCha20Poly1305, AuthAlg::None},
      {"aes_cbc_128_sha256", EncAlg::AesCbc128, AuthAlg::HmacSha256},
      {"aes_cbc_192_sha256", EncAlg::AesCbc192, AuthAlg::HmacSha256},
      {"aes_cbc_256_sha256", EncAlg::AesCbc256, AuthAlg::HmacSha256},
      {"aes_cbc_128_sha1", EncAlg::AesCbc128, AuthAlg::HmacSha1},
      {"null_sha256", EncAlg::Null, AuthAlg::HmacSha256},
      {"null_sha1", EncAlg::Null, AuthAlg::HmacSha1},
      {"null_gmac_128", EncAlg::Null, AuthAlg::AesGmac128},
      {"null_gmac_256", EncAlg::Null, AuthAlg::AesGmac256},
  };
  return suites;
}

ScopedCryptoBackend::ScopedCryptoBackend(CryptoBackend b) : previous_(crypto_backend()) {
  std::string why_not;
  if (select_crypto_backend(b, &why_not) != b) throw std::runtime_error(why_not);
}

ScopedCryptoBackend::~ScopedCryptoBackend() { select_crypto_backend(previous_); }

SaSpec make_spec(const Suite& suite, Direction dir, Mode mode, const std::string& src, const std::string& dst,
                 uint32_t spi, bool esn, bool udp_encap) {
  SaSpec s;
  s.dir = dir;
  s.mode = mode;
  s.src = IpAddr::parse(src);
  s.dst = IpAddr::parse(dst);
  s.spi = spi;
  s.enc = suite.enc;
  s.auth = suite.auth;
  const EncAlgInfo& e = info(suite.enc);
  const AuthAlgInfo& a = info(suite.auth);
  if (e.key_len + e.salt_len) {
    Bytes k = key_bytes(e.key_len + e.salt_len, uint8_t(0x11 + spi));
    s.enc_key = SecureBytes(k);
  }
  if (a.key_len + a.salt_len) {
    Bytes k = key_bytes(a.key_len + a.salt_len, uint8_t(0x77 + spi));
    s.auth_key = SecureBytes(k);
  }
  s.esn = esn;
  s.udp_encap = udp_encap;
  s.encap_sport = 4500;
  s.encap_dport = 4500;
  return s;
}

SaSpec mirror(const SaSpec& s) {
  SaSpec m = s;
  m.dir = s.dir == Direction::Out ? Direction::In : Direction::Out;
  return m;
}

static uint16_t sum_fold(const uint8_t* p, size_t n, uint32_t acc) {
  for (; n >= 2; p += 2, n -= 2) acc += uint32_t(p[0] << 8 | p[1]);
  if (n) acc += uint32_t(p[0]) << 8;
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return uint16_t(~acc);
}

void fix_ipv4_checksum(uint8_t* ip) {
  const size_t ihl = size_t(ip[0] & 15) * 4;
  ip[10] = ip[11] = 0;
  const uint16_t c = sum_fold(ip, ihl, 0);
  ip[10] = uint8_t(c >> 8);
  ip[11] = uint8_t(c);
}

bool ipv4_checksum_ok(const uint8_t* ip) { return sum_fold(ip, size_t(ip[0] & 15) * 4, 0) == 0; }

Bytes make_udp_packet(const std::string& src, const std::string& dst, size_t payload_len, uint8_t tos, bool df,
                      uint8_t fill) {
  const IpAddr s = IpAddr::parse(src), d = IpAddr::parse(dst);
  const bool v6 = s.family == Family::V6;
  const size_t hl = v6 ? 40 : 20;
  Bytes p(hl + 8 + payload_len);
  const size_t udp_len = 8 + payload_len;
  if (!v6) {
    p[0] = 0x45;
    p[1] = tos;
    p[2] = uint8_t(p.size() >> 8);
    p[3] = uint8_t(p.size());
    p[4] = 0x12;
    p[5] = 0x34;
    p[6] = df ? 0x40 : 0;
    p[8] = 63;
    p[9] = 17;
    std::memcpy(&p[12], s.bytes.data(), 4);
    std::memcpy(&p[16], d.bytes.data(), 4);
    fix_ipv4_checksum(p.data());
  } else {
    p[0] = uint8_t(0x60 | tos >> 4);
    p[1] = uint8_t((tos & 15) << 4);
    p[4] = uint8_t(udp_len >> 8);
    p[5] = uint8_t(udp_len);
    p[6] = 17;
    p[7] = 63;
    std::memcpy(&p[8], s.bytes.data(), 16);
    std::memcpy(&p[24], d.bytes.data(), 16);
  }
  uint8_t* u = &p[hl];
  // Ports 40000 -> 40001: no dissector claims them, so tshark shows the
  // payload as data (a DNS port makes tshark throw before the ICV check).
  u[0] = 0x9c;
  u[1] = 0x40;
  u[2] = 0x9c;
  u[3] = 0x41;
  u[4] = uint8_t(udp_len >> 8);
  u[5] = uint8_t(udp_len);
  for (size_t i = 0; i < payload_len; ++i) u[8 + i] = uint8_t(fill + i);
  // UDP checksum over the pseudo header.
  uint32_t acc = 0;
  const size_t alen = v6 ? 16 : 4;
  for (size_t i = 0; i < alen; i += 2) acc += uint32_t(s.bytes[i] << 8 | s.bytes[i + 1]) + uint32_t(d.bytes[i] << 8 | d.bytes[i + 1]);
  acc += 17 + uint32_t(udp_len);
  uint16_t c = sum_fold(u, udp_len, acc);
  if (c == 0) c = 0xffff;
  u[6] = uint8_t(c >> 8);
  u[7] = uint8_t(c);
  return p;
}

PacketBuffer::PacketBuffer(const Bytes& packet, uint32_t headroom, uint32_t tailroom)
    : storage_(kGuard + headroom + packet.size() + tailroom + kGuard, 0xee),
      headroom_(headroom),
      tailroom_(tailroom),
      len_(uint32_t(packet.size())) {
  uint8_t* data = storage_.data() + kGuard + headroom;
  std::memcpy(data, packet.data(), packet.size());
  pkt_ = Packet{data, len_, headroom, tailroom};
}

bool PacketBuffer::guards_intact() const {
  for (size_t i = 0; i < kGuard; ++i)
    if (storage_[i] != 0xee || storage_[storage_.size() - 1 - i] != 0xee) return false;
  // The packet must lie inside the room it was given.
  const uint8_t* lo = storage_.data() + kGuard;
  const uint8_t* hi = lo + headroom_ + len_ + tailroom_;
  return pkt_.data >= lo && pkt_.data + pkt_.len <= hi && pkt_.data - pkt_.headroom == lo &&
         pkt_.data + pkt_.len + pkt_.tailroom == hi;
}

static std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

ProcessResult run_process(const std::vector<std::string>& argv, const std::string& stdin_text) {
  char in_path[] = "/tmp/ov2_esp_in_XXXXXX", out_path[] = "/tmp/ov2_esp_out_XXXXXX",
       err_path[] = "/tmp/ov2_esp_err_XXXXXX";
  int in_fd = mkstemp(in_path), out_fd = mkstemp(out_path), err_fd = mkstemp(err_path);
  ProcessResult r;
  if (in_fd < 0 || out_fd < 0 || err_fd < 0) return r;
  if (write(in_fd, stdin_text.data(), stdin_text.size()) != ssize_t(stdin_text.size())) return r;
  lseek(in_fd, 0, SEEK_SET);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
  posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
  posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  if (posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ) == 0) {
    int st = 0;
    waitpid(pid, &st, 0);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  posix_spawn_file_actions_destroy(&fa);
  close(in_fd);
  close(out_fd);
  close(err_fd);
  r.out = read_all(out_path);
  r.err = read_all(err_path);
  unlink(in_path);
  unlink(out_path);
  unlink(err_path);
  return r;
}

std::vector<std::map<std::string, std::string>> read_vectors(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open test vector file " + path);
  std::vector<std::map<std::string, std::string>> cases;
  std::string line, last_key;
  auto trim = [](std::string s) {
    const auto b = s.find_first_not_of(" \t\r"), e = s.find_last_not_of(" \t\r");
    return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
  };
  while (std::getline(f, line)) {
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      cases.emplace_back();
      cases.back()["case"] = line.substr(1, line.size() - 2);
      continue;
    }
    if (cases.empty()) continue;
    const auto eq = line.find('=');
    if (eq == std::string::npos) {  // continuation of a long hex value
      cases.back()[last_key] += line;
      continue;
    }
    last_key = trim(line.substr(0, eq));
    cases.back()[last_key] = trim(line.substr(eq + 1));
  }
  return cases;
}

}  // namespace ov2::esp::test
