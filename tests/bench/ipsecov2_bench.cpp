// ipsecov2-bench: throughput of the ESP engine and the data plane, each next
// to a baseline measured in the same run (raw OpenSSL AEAD records/s on the
// same machine -- and raw intel-ipsec-mb records/s for the engine on that
// backend --, the plain veth, strongSwan).  Prints a table; --json FILE
// writes every key.  Speed targets are judged on the ratios, never in tests.
#include <intel-ipsec-mb.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/rand.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../proc_status.h"
#include "bench_common.h"
#include "dataplane/inbound_policy.h"
#include "dataplane/sa_runtime.h"
#include "esp/crypto_backend.h"
#include "esp/esp.h"

namespace ov2::bench {
namespace {

struct CipherCase {
  const char* label;    // key suffix
  EncAlg alg;
  const char* evp_name; // OpenSSL cipher for the raw baseline
};

const CipherCase kCiphers[] = {
    {"aes128gcm", EncAlg::AesGcm128, "AES-128-GCM"},
    {"aes256gcm", EncAlg::AesGcm256, "AES-256-GCM"},
    {"chacha20poly1305", EncAlg::ChaCha20Poly1305, "ChaCha20-Poly1305"},
};
const uint32_t kSizes[] = {64, 512, 1400};

std::vector<uint8_t> random_bytes(size_t n) {
  std::vector<uint8_t> v(n);
  RAND_bytes(v.data(), static_cast<int>(n));
  return v;
}

// One raw AEAD record's inputs: `size` random bytes, a fresh 12-byte nonce
// and 8-byte AAD per record (what ESP feeds the cipher), 16-byte tag.
struct Record {
  explicit Record(uint32_t size) : in(random_bytes(size)), out(size + 32) {}
  // The nonce and AAD by whole-width stores, as the engine writes them
  // (esp/aead_inputs.h): the cipher loads them right away in 8-byte or wider
  // loads, which cannot take their data from smaller stores still in the
  // store buffer (an 8-byte store at nonce+4 cost intel-ipsec-mb's 64-byte
  // sealing about 5 ns, a tenth of it).  Same bytes as a copy of `seq`.
  void next() {
    ++seq;
    if constexpr (std::endian::native == std::endian::little) {
      using Block = uint64_t __attribute__((vector_size(16)));
      uint32_t salt, prefix;
      std::memcpy(&salt, nonce, 4);
      std::memcpy(&prefix, aad, 4);
      const Block n = {salt | seq << 32, seq >> 32};
      std::memcpy(nonce, &n, 16);
      const uint64_t a = prefix | uint64_t(uint32_t(seq)) << 32;
      std::memcpy(aad, &a, 8);
    } else {
      std::memcpy(nonce + 4, &seq, 8);
      std::memcpy(aad + 4, &seq, 4);
    }
  }
  std::vector<uint8_t> in, out;
  alignas(16) uint8_t nonce[16] = {1, 2, 3, 4};  // 12 used
  uint8_t aad[8] = {0, 0, 0x10, 0x01};
  uint8_t tag[16] = {};
  uint64_t seq = 0;
};

// One sealed record kept for opening again and again (the raw opening
// baselines): its ciphertext, nonce, AAD and tag.
struct Sealed {
  Sealed() = default;
  explicit Sealed(const Record& r) : ct(r.out), plain(r.out.size()) {
    std::memcpy(nonce, r.nonce, sizeof nonce);
    std::memcpy(aad, r.aad, sizeof aad);
    std::memcpy(tag, r.tag, sizeof tag);
  }
  std::vector<uint8_t> ct, plain;
  uint8_t nonce[12] = {}, aad[8] = {}, tag[16] = {};
};

}  // namespace

// Raw AEAD: one record of `size` bytes per call on a prepared context (key
// scheduled once), fresh 12-byte nonce and 8-byte AAD per record, 16-byte tag,
// always the same hot buffer.  This is the most an ESP implementation on
// OpenSSL can do per core.
class RawOpenSslAead {
 public:
  RawOpenSslAead(const char* evp_name, uint32_t size)
      : cipher_(EVP_CIPHER_fetch(nullptr, evp_name, nullptr)),
        ctx_(EVP_CIPHER_CTX_new()),
        key_(random_bytes(static_cast<size_t>(EVP_CIPHER_get_key_length(cipher_)))),
        r_(size),
        size_(size) {
    EVP_EncryptInit_ex2(ctx_, cipher_, key_.data(), nullptr, nullptr);
  }
  ~RawOpenSslAead() {
    EVP_CIPHER_CTX_free(ctx_);
    EVP_CIPHER_free(cipher_);
  }
  RawOpenSslAead(const RawOpenSslAead&) = delete;
  RawOpenSslAead& operator=(const RawOpenSslAead&) = delete;
  void one() {
    r_.next();
    int n = 0;
    EVP_EncryptInit_ex2(ctx_, nullptr, nullptr, r_.nonce, nullptr);
    EVP_EncryptUpdate(ctx_, nullptr, &n, r_.aad, sizeof r_.aad);
    EVP_EncryptUpdate(ctx_, r_.out.data(), &n, r_.in.data(), static_cast<int>(size_));
    EVP_EncryptFinal_ex(ctx_, r_.out.data() + n, &n);
    EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_GET_TAG, sizeof r_.tag, r_.tag);
  }
  // The other direction: opens (decrypts and checks the tag of) one record
  // sealed beforehand, on a prepared decryption context.  The baseline of the
  // decapsulation ratios (AES-GCM decryption runs at another speed than
  // encryption).
  void open() {
    const Sealed& s = sealed();
    open_at(s.ct.data(), sealed_.plain.data());
  }
  // The same record wherever it was copied, into `out` (may be `ct`: in place).
  void open_at(const uint8_t* ct, uint8_t* out) {
    int n = 0;
    EVP_DecryptInit_ex2(dec_.get(), nullptr, nullptr, sealed_.nonce, nullptr);
    EVP_DecryptUpdate(dec_.get(), nullptr, &n, sealed_.aad, sizeof sealed_.aad);
    EVP_DecryptUpdate(dec_.get(), out, &n, ct, static_cast<int>(size_));
    EVP_CIPHER_CTX_ctrl(dec_.get(), EVP_CTRL_AEAD_SET_TAG, sizeof sealed_.tag, sealed_.tag);
    if (EVP_DecryptFinal_ex(dec_.get(), out + n, &n) != 1) std::abort();
  }
  const Sealed& sealed() {
    if (!dec_) {
      one();  // a record to open (one() moves on to other nonces later)
      sealed_ = Sealed(r_);
      dec_.reset(EVP_CIPHER_CTX_new());
      EVP_DecryptInit_ex2(dec_.get(), cipher_, key_.data(), nullptr, nullptr);
    }
    return sealed_;
  }

 private:
  EVP_CIPHER* cipher_;
  EVP_CIPHER_CTX* ctx_;
  std::vector<uint8_t> key_;
  Record r_;
  uint32_t size_;
  std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)> dec_{nullptr, EVP_CIPHER_CTX_free};
  Sealed sealed_;
};

double raw_aead_records_per_s(const char* evp_name, uint32_t size, const Timing& t, bool cpu_time) {
  RawOpenSslAead raw(evp_name, size);
  return measure_rate(
      t,
      [&](uint64_t iterations) {
        for (uint64_t i = 0; i < iterations; ++i) raw.one();
      },
      cpu_time);
}

namespace {

// The same record on intel-ipsec-mb's direct API (what the engine's
// ipsec-mb backend calls): the baseline for engine_*_ratio_*_ipsecmb.
class RawIpsecMbAead {
 public:
  RawIpsecMbAead(const CipherCase& c, uint32_t size)
      : alg_(c.alg), mgr_(alloc_mb_mgr(0)), key_(random_bytes(32)), r_(size), size_(size) {
    IMB_ARCH arch = IMB_ARCH_NONE;
    init_mb_mgr_auto(mgr_, &arch);
    if (alg_ == EncAlg::AesGcm128)
      IMB_AES128_GCM_PRE(mgr_, key_.data(), &gcm_key_);
    else if (alg_ == EncAlg::AesGcm256)
      IMB_AES256_GCM_PRE(mgr_, key_.data(), &gcm_key_);
  }
  ~RawIpsecMbAead() { free_mb_mgr(mgr_); }
  RawIpsecMbAead(const RawIpsecMbAead&) = delete;
  RawIpsecMbAead& operator=(const RawIpsecMbAead&) = delete;
  void one() {
    r_.next();
    if (alg_ == EncAlg::ChaCha20Poly1305) {
      chacha20_poly1305_context_data ctx;
      IMB_CHACHA20_POLY1305_INIT(mgr_, key_.data(), &ctx, r_.nonce, r_.aad, sizeof r_.aad);
      IMB_CHACHA20_POLY1305_ENC_UPDATE(mgr_, key_.data(), &ctx, r_.out.data(), r_.in.data(), size_);
      IMB_CHACHA20_POLY1305_ENC_FINALIZE(mgr_, &ctx, r_.tag, sizeof r_.tag);
    } else {
      gcm_context_data ctx;
      if (alg_ == EncAlg::AesGcm128)
        IMB_AES128_GCM_ENC(mgr_, &gcm_key_, &ctx, r_.out.data(), r_.in.data(), size_, r_.nonce, r_.aad,
                           sizeof r_.aad, r_.tag, sizeof r_.tag);
      else
        IMB_AES256_GCM_ENC(mgr_, &gcm_key_, &ctx, r_.out.data(), r_.in.data(), size_, r_.nonce, r_.aad,
                           sizeof r_.aad, r_.tag, sizeof r_.tag);
    }
  }
  // Opens one record sealed beforehand: decrypts and compares the tag, as the
  // engine's ipsec-mb backend does (the library computes, does not check).
  void open() {
    const Sealed& s = sealed();
    open_at(s.ct.data(), sealed_.plain.data());
  }
  // The same record wherever it was copied, into `out` (may be `ct`: in place).
  void open_at(const uint8_t* ct, uint8_t* out) {
    const Sealed& x = sealed_;
    uint8_t tag[16];
    if (alg_ == EncAlg::ChaCha20Poly1305) {
      chacha20_poly1305_context_data ctx;
      IMB_CHACHA20_POLY1305_INIT(mgr_, key_.data(), &ctx, x.nonce, x.aad, sizeof x.aad);
      IMB_CHACHA20_POLY1305_DEC_UPDATE(mgr_, key_.data(), &ctx, out, ct, size_);
      IMB_CHACHA20_POLY1305_DEC_FINALIZE(mgr_, &ctx, tag, sizeof tag);
    } else {
      gcm_context_data ctx;
      if (alg_ == EncAlg::AesGcm128)
        IMB_AES128_GCM_DEC(mgr_, &gcm_key_, &ctx, out, ct, size_, x.nonce, x.aad, sizeof x.aad, tag, sizeof tag);
      else
        IMB_AES256_GCM_DEC(mgr_, &gcm_key_, &ctx, out, ct, size_, x.nonce, x.aad, sizeof x.aad, tag, sizeof tag);
    }
    if (CRYPTO_memcmp(tag, x.tag, sizeof tag) != 0) std::abort();
  }
  const Sealed& sealed() {
    if (sealed_.ct.empty()) {
      one();  // a record to open (one() moves on to other nonces later)
      sealed_ = Sealed(r_);
    }
    return sealed_;
  }

 private:
  EncAlg alg_;
  IMB_MGR* mgr_;
  alignas(64) gcm_key_data gcm_key_{};
  std::vector<uint8_t> key_;
  Record r_;
  uint32_t size_;
  Sealed sealed_;
};

using MbMgr = std::unique_ptr<IMB_MGR, decltype(&free_mb_mgr)>;

// Is intel-ipsec-mb's job API worth a whole AF_XDP batch (issue #6)?  The
// same AES-128-GCM records sealed one call at a time through the direct API
// (what the engine does) and 32 at a time through IMB_SUBMIT_BURST (the job
// API with GCM jobs; 1.3 has no AEAD-specific burst call).  The first batch
// of each is compared byte for byte (ciphertext and tag) so the rate cannot
// count a misconfigured job.  Thread CPU time: both paths are single-threaded.
struct BurstVsDirect {
  double direct = 0, burst = 0;
};

BurstVsDirect ipsecmb_gcm_burst_vs_direct(uint32_t size, const Timing& t) {
  constexpr uint32_t kJobs = 32;
  const MbMgr mgr_owner(alloc_mb_mgr(0), free_mb_mgr);
  IMB_MGR* mgr = mgr_owner.get();
  IMB_ARCH arch = IMB_ARCH_NONE;
  init_mb_mgr_auto(mgr, &arch);
  alignas(64) static gcm_key_data gcm_key;
  const auto key = random_bytes(16);
  IMB_AES128_GCM_PRE(mgr, key.data(), &gcm_key);
  std::vector<Record> records;
  for (uint32_t j = 0; j < kJobs; ++j) records.emplace_back(size);
  auto direct_batch = [&] {
    for (auto& r : records) {
      r.next();
      gcm_context_data ctx;
      IMB_AES128_GCM_ENC(mgr, &gcm_key, &ctx, r.out.data(), r.in.data(), size, r.nonce, r.aad, sizeof r.aad, r.tag,
                         sizeof r.tag);
    }
  };
  IMB_JOB* jobs[kJobs];
  auto burst_batch = [&] {
    uint32_t got = IMB_GET_NEXT_BURST(mgr, kJobs, jobs);
    if (got < kJobs) {
      IMB_FLUSH_BURST(mgr, kJobs, jobs);
      got = IMB_GET_NEXT_BURST(mgr, kJobs, jobs);
    }
    if (got < kJobs) std::abort();
    for (uint32_t j = 0; j < kJobs; ++j) {
      Record& r = records[j];
      r.next();
      IMB_JOB* job = jobs[j];
      job->cipher_mode = IMB_CIPHER_GCM;
      job->cipher_direction = IMB_DIR_ENCRYPT;
      job->chain_order = IMB_ORDER_CIPHER_HASH;
      job->hash_alg = IMB_AUTH_AES_GMAC;
      job->enc_keys = &gcm_key;
      job->dec_keys = &gcm_key;
      job->key_len_in_bytes = IMB_KEY_128_BYTES;
      job->src = r.in.data();
      job->dst = r.out.data();
      job->cipher_start_src_offset_in_bytes = 0;
      job->msg_len_to_cipher_in_bytes = size;
      job->hash_start_src_offset_in_bytes = 0;
      job->msg_len_to_hash_in_bytes = size;
      job->iv = r.nonce;
      job->iv_len_in_bytes = 12;
      job->u.GCM.aad = r.aad;
      job->u.GCM.aad_len_in_bytes = sizeof r.aad;
      job->auth_tag_output = r.tag;
      job->auth_tag_output_len_in_bytes = sizeof r.tag;
    }
    uint32_t done = IMB_SUBMIT_BURST(mgr, kJobs, jobs);
    if (done < kJobs) done += IMB_FLUSH_BURST(mgr, kJobs - done, jobs + done);
    if (done != kJobs) std::abort();
    for (uint32_t j = 0; j < kJobs; ++j)
      if (jobs[j]->status != IMB_STATUS_COMPLETED) std::abort();
  };
  // Same records, same sequence numbers: both paths must give the same bytes.
  auto snapshot = [&] {
    std::vector<uint8_t> all;
    for (const auto& r : records) {
      all.insert(all.end(), r.out.begin(), r.out.begin() + size);
      all.insert(all.end(), r.tag, r.tag + sizeof r.tag);
    }
    return all;
  };
  for (auto& r : records) r.seq = 0;
  direct_batch();
  const auto by_direct = snapshot();
  for (auto& r : records) r.seq = 0;
  burst_batch();
  if (snapshot() != by_direct) {
    std::fprintf(stderr, "ipsecov2-bench: IMB burst output differs from the direct API\n");
    std::abort();
  }
  BurstVsDirect out;
  std::vector<double> d, b;
  const Timing single{t.seconds_per_run, 1};
  for (int run = 0; run < t.runs; ++run) {  // alternated: machine load hits both alike
    d.push_back(kJobs * measure_rate(
                            single,
                            [&](uint64_t n) {
                              for (uint64_t i = 0; i < n; ++i) direct_batch();
                            },
                            true));
    b.push_back(kJobs * measure_rate(
                            single,
                            [&](uint64_t n) {
                              for (uint64_t i = 0; i < n; ++i) burst_batch();
                            },
                            true));
  }
  std::sort(d.begin(), d.end());
  std::sort(b.begin(), b.end());
  out.direct = d[d.size() / 2];
  out.burst = b[b.size() / 2];
  return out;
}

}  // namespace

SaSpec bench_sa(EncAlg alg, Direction dir, const std::vector<uint8_t>& key) {
  SaSpec sa;
  sa.dir = dir;
  sa.mode = Mode::Tunnel;
  sa.src = IpAddr::parse("192.0.2.1");
  sa.dst = IpAddr::parse("192.0.2.2");
  sa.spi = 0x1001;
  sa.enc = alg;
  sa.auth = AuthAlg::None;
  sa.enc_key = SecureBytes(key);
  sa.replay_window = 64;
  return sa;
}

// A plaintext IPv4/UDP packet of exactly `size` bytes (the inner packet).
std::vector<uint8_t> plaintext_packet(uint32_t size) {
  std::vector<uint8_t> p(size, 0xab);
  p[0] = 0x45;
  p[2] = static_cast<uint8_t>(size >> 8);
  p[3] = static_cast<uint8_t>(size);
  p[8] = 64;
  p[9] = 17;
  const uint8_t src[4] = {10, 1, 0, 1}, dst[4] = {10, 2, 0, 1};
  std::memcpy(&p[12], src, 4);
  std::memcpy(&p[16], dst, 4);
  uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  const uint16_t csum = static_cast<uint16_t>(~sum);
  p[10] = static_cast<uint8_t>(csum >> 8);
  p[11] = static_cast<uint8_t>(csum);
  p[20] = 0x30;  // UDP ports / length: content does not matter to ESP
  p[22] = 0x30;
  p[24] = static_cast<uint8_t>((size - 20) >> 8);
  p[25] = static_cast<uint8_t>(size - 20);
  return p;
}


namespace {

constexpr uint32_t kRoom = 256;

// kBatch frames of kRoom head- and tailroom around one plaintext packet of
// `size` bytes, as an AF_XDP batch of the worker (WorkerConfig::batch, 64)
// sits in UMEM.  refill() copies the plaintext in again (not timed: the
// kernel wrote the worker's frames), seal() encapsulates the batch in place;
// reseal() does both, so that decapsulations have fresh sequence numbers.
// A batch of 64 frames of 1.9 KB stays in L2 like the worker's; the raw
// baselines work on one hot buffer.
class SealedBatch {
 public:
  static constexpr size_t kBatch = 64;
  SealedBatch(esp::OutboundSa& out, uint32_t size)
      : out_(out), plain_(plaintext_packet(size)), frames_((kRoom + size + kRoom) * kBatch), packets_(kBatch) {}
  void refill() {
    const auto size = static_cast<uint32_t>(plain_.size());
    const size_t stride = kRoom + size + kRoom;
    for (size_t i = 0; i < kBatch; ++i) {
      uint8_t* f = frames_.data() + i * stride;
      std::memcpy(f + kRoom, plain_.data(), size);
      packets_[i] = esp::Packet{f + kRoom, size, kRoom, kRoom};
    }
  }
  void seal() {
    for (auto& p : packets_)
      if (out_.encapsulate(p, 0) != esp::Reason::Ok) std::abort();
  }
  void reseal() {
    refill();
    seal();
  }
  esp::Packet& operator[](size_t i) { return packets_[i]; }

 private:
  esp::OutboundSa& out_;
  const std::vector<uint8_t> plain_;
  std::vector<uint8_t> frames_;
  std::vector<esp::Packet> packets_;
};

// The raw record's ciphertext copied into kBatch frames laid out as
// SealedBatch's (same stride and offset), to be opened in place: the raw
// opening with the memory the engine's decapsulation works on (a batch in L2,
// written where it is read) instead of one hot buffer.  refill() is not timed.
class RawFrames {
 public:
  RawFrames(const Sealed& s, uint32_t size)
      : sealed_(s), stride_(kRoom + size + kRoom), frames_(stride_ * SealedBatch::kBatch) {}
  void refill() {
    for (size_t i = 0; i < SealedBatch::kBatch; ++i)
      std::memcpy(frames_.data() + i * stride_ + kRoom, sealed_.ct.data(), sealed_.ct.size());
  }
  uint8_t* operator[](size_t i) { return frames_.data() + i * stride_ + kRoom; }

 private:
  const Sealed& sealed_;
  size_t stride_;
  std::vector<uint8_t> frames_;
};

// A raw library's record functions for measure_engine.
struct RawAead {
  std::function<void()> seal, open;
  std::function<void(uint8_t*)> open_in_place;
  const Sealed* sealed;  // what open / open_in_place open
  template <class Raw>
  static RawAead of(Raw& r) {
    return {[&r] { r.one(); }, [&r] { r.open(); }, [&r](uint8_t* f) { r.open_at(f, f); }, &r.sealed()};
  }
};

struct EngineRates {
  double raw, raw_open, raw_open_frames, enc, dec;  // medians over rounds: records/s, packets/s
  // Medians of the per-round ratios: enc to raw sealing, dec to raw opening,
  // dec to raw opening in place in the same frames.
  double enc_ratio, dec_ratio, dec_ratio_frames;
};

// The engine on the crypto backend selected now (SAs take it at creation)
// against `raw_one` (one raw AEAD record of the same cipher and size), in
// interleaved rounds: full ESP tunnel encapsulation (headers, padding,
// trailer, sequence number, counters, lifetimes) of a batch of frames, and
// full decapsulation (parse, replay check, authenticate+decrypt, padding,
// inner packet, window update) of a batch the engine sealed beforehand.
EngineRates measure_engine(const CipherCase& c, uint32_t size, const Timing& t, const RawAead& raw) {
  const auto key = random_bytes(info(c.alg).key_len + info(c.alg).salt_len);
  esp::OutboundSa enc_sa(bench_sa(c.alg, Direction::Out, key));
  esp::OutboundSa sealer(bench_sa(c.alg, Direction::Out, key));
  esp::InboundSa in(bench_sa(c.alg, Direction::In, key));
  SealedBatch plain(enc_sa, size), sealed(sealer, size);
  RawFrames raw_frames(*raw.sealed, size);
  const size_t n = SealedBatch::kBatch;
  const auto rates = interleaved_rates(
      t, {{[] {},
           [&] {
             for (size_t i = 0; i < n; ++i) raw.seal();
           },
           n},
          {[] {},
           [&] {
             for (size_t i = 0; i < n; ++i) raw.open();
           },
           n},
          {[&] { raw_frames.refill(); },
           [&] {
             for (size_t i = 0; i < n; ++i) raw.open_in_place(raw_frames[i]);
           },
           n},
          {[&] { plain.refill(); }, [&] { plain.seal(); }, n},
          {[&] { sealed.reseal(); },
           [&] {
             for (size_t i = 0; i < n; ++i)
               if (in.decapsulate(sealed[i], 0).reason != esp::Reason::Ok) std::abort();
           },
           n}});
  return {median(rates[0]),
          median(rates[1]),
          median(rates[2]),
          median(rates[3]),
          median(rates[4]),
          median_ratio(rates[3], rates[0]),
          median_ratio(rates[4], rates[1]),
          median_ratio(rates[4], rates[2])};
}

// Two batched measurements in alternating runs (a change of machine load
// during the bench hits both alike); the median rate of each.
std::pair<double, double> alternated_medians(const Timing& t, size_t batch, const std::function<void()>& prepare,
                                             const std::function<void()>& a, const std::function<void()>& b) {
  const auto rates = interleaved_rates(t, {{prepare, a, batch}, {prepare, b, batch}});
  return {median(rates[0]), median(rates[1])};
}

// What one keyed AES-128-GCM EVP_CIPHER_CTX costs in RSS (the floor of an
// SA's memory on OpenSSL: the ESP engine keeps at least one per SA).
double openssl_gcm_ctx_rss_bytes(uint32_t count) {
  EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-128-GCM", nullptr);
  const auto key = random_bytes(16);
  std::vector<EVP_CIPHER_CTX*> ctxs(count);
  const uint64_t before = test::vm_rss_bytes(0);
  for (auto& c : ctxs) {
    c = EVP_CIPHER_CTX_new();
    EVP_DecryptInit_ex2(c, cipher, key.data(), nullptr, nullptr);
  }
  const uint64_t after = test::vm_rss_bytes(0);
  for (auto* c : ctxs) EVP_CIPHER_CTX_free(c);
  EVP_CIPHER_free(cipher);
  return (static_cast<double>(after) - static_cast<double>(before)) / count;
}

}  // namespace

// The inbound path of the worker in one thread, in this process: per packet,
// the (SPI, family, dst) key is read from the outer header, looked up with
// SaRuntime::find_inbound (the workers' lock-free index) and the SA found
// decapsulates it.  Traffic is on one SA; the rate is measured with only that
// SA installed and again with `sa_count` - 1 other inbound SAs installed
// (same destination, other SPIs).  Only lookup + decapsulation are timed.
void run_sa_scale_benchmarks(Report& report, const Timing& t, uint32_t sa_count) {
  const auto key = random_bytes(info(EncAlg::AesGcm128).key_len + info(EncAlg::AesGcm128).salt_len);
  esp::OutboundSa out(bench_sa(EncAlg::AesGcm128, Direction::Out, key));
  // Two tables, each with the measured flow's inbound SA; `many` also holds
  // sa_count - 1 others.  Their runs alternate, so a change of machine load
  // during the bench hits both alike.
  SaRuntime one(OV2_MAX_SAS), many(OV2_MAX_SAS);
  constexpr uint64_t kSeq = uint64_t{1} << 24;
  one.install(kSeq | 0, bench_sa(EncAlg::AesGcm128, Direction::In, key));
  many.install(kSeq | 0, bench_sa(EncAlg::AesGcm128, Direction::In, key));
  SaSpec other = bench_sa(EncAlg::AesGcm128, Direction::In, key);
  const uint64_t rss0 = test::vm_rss_bytes(0);
  const auto t0 = std::chrono::steady_clock::now();
  for (uint32_t i = 1; i < sa_count; ++i) {
    other.spi = 0x100000 + i;
    many.install(kSeq | i, other);
  }
  const double install_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double rss_per_sa = (static_cast<double>(test::vm_rss_bytes(0)) - static_cast<double>(rss0)) / (sa_count - 1);
  SealedBatch sealed(out, 64);
  auto lookup_and_decap = [&](const SaRuntime& table) {
    for (size_t i = 0; i < SealedBatch::kBatch; ++i) {
      const uint8_t* ip = sealed[i].data;  // outer IPv4 (IHL 5), then ESP
      ov2_sa_key k{};
      k.family = OV2_AF_INET;
      std::memcpy(k.daddr, ip + 16, 4);
      std::memcpy(&k.spi_be, ip + 20, 4);
      const SaRuntimeEntry* e = table.find_inbound(k);
      if (e == nullptr || e->inbound->decapsulate(sealed[i], 0).reason != esp::Reason::Ok) std::abort();
    }
  };
  const auto [pps_one, pps_many] = alternated_medians(
      t, SealedBatch::kBatch, [&] { sealed.reseal(); }, [&] { lookup_and_decap(one); },
      [&] { lookup_and_decap(many); });
  const std::string n = std::to_string(sa_count);
  report.add("inbound_lookup_decap_pps_1_sa", pps_one, "packets/s",
             "find_inbound + decap, 64 B, 1 SA installed, 1 thread");
  report.add("inbound_lookup_decap_pps_100k_sa", pps_many, "packets/s",
             "same traffic, " + n + " inbound SAs installed");
  report.add("sa_runtime_install_per_s_in", (sa_count - 1) / install_s, "SAs/s",
             "SaRuntime::install alone (ESP object + index), in-process, up to " + n + " inbound SAs");
  report.add("sa_runtime_rss_bytes_per_sa_in", rss_per_sa, "bytes",
             "RSS growth / inbound SA in SaRuntime alone (InboundSa + its OpenSSL context + entry + index)");
  report.add("openssl_gcm_ctx_rss_bytes", openssl_gcm_ctx_rss_bytes(sa_count), "bytes",
             "RSS of one keyed AES-128-GCM EVP_CIPHER_CTX (OpenSSL " OPENSSL_VERSION_TEXT ")");
  report.add("pps_ratio_100k_sa_vs_1_sa", pps_many / pps_one, "ratio",
             n + " SAs vs 1 SA, in-process worker lookup + decap, runs alternated");
}

// The worker's RFC 4301 §5.2 inbound check (dataplane/inbound_policy.h) on
// top of decapsulation, per packet as Worker::inbound_policy_allows does it:
// selector extraction + InboundPolicyTable::check, which must Accept.  64 B
// AES-128-GCM tunnel packets on one SA whose policy (dst 10.2.0.0/24) is the
// last of `count`: the others protect other SAs (dst 10.3.x.y/32, better
// priority), as with one policy per tunnel.  Tables of 1 and of `count`
// policies, runs alternated.
void run_inbound_policy_benchmarks(Report& report, const Timing& t, uint32_t count) {
  const auto key = random_bytes(info(EncAlg::AesGcm128).key_len + info(EncAlg::AesGcm128).salt_len);
  esp::OutboundSa out(bench_sa(EncAlg::AesGcm128, Direction::Out, key));
  esp::InboundSa in(bench_sa(EncAlg::AesGcm128, Direction::In, key));
  constexpr uint64_t kHandle = (uint64_t{1} << 24) | 7;
  auto policy = [](uint32_t id, const std::string& dst, uint64_t sa, uint32_t priority) {
    PolicySpec s;
    s.dir = Direction::In;
    s.src = IpPrefix::parse("10.1.0.0/16");
    s.dst = IpPrefix::parse(dst);
    s.action = PolicyAction::Protect;
    s.sa_handle = sa;
    s.priority = priority;
    return CompiledPolicy{id, s, sa, 0};
  };
  std::vector<CompiledPolicy> many;
  for (uint32_t i = 0; i + 1 < count; ++i)
    many.push_back(policy(i + 2, "10.3." + std::to_string(i / 256) + "." + std::to_string(i % 256) + "/32",
                          (uint64_t{2} << 24) | (i + 8), 100));
  many.push_back(policy(1, "10.2.0.0/24", kHandle, 1000));
  const InboundPolicyTable one_table({policy(1, "10.2.0.0/24", kHandle, 1000)}), many_table(many);
  SealedBatch sealed(out, 64);  // 10.1.0.1 -> 10.2.0.1, UDP
  auto decap_and_check = [&](const InboundPolicyTable& table) {
    for (size_t i = 0; i < SealedBatch::kBatch; ++i) {
      if (in.decapsulate(sealed[i], 0).reason != esp::Reason::Ok) std::abort();
      PacketSelector sel;
      if (!packet_selector_of(sealed[i].data, sealed[i].len, &sel) ||
          table.check(kHandle, sel) != InboundVerdict::Accept)
        std::abort();
    }
  };
  const auto [p1, pn] = alternated_medians(
      t, SealedBatch::kBatch, [&] { sealed.reseal(); }, [&] { decap_and_check(one_table); },
      [&] { decap_and_check(many_table); });
  const std::string n = std::to_string(count);
  report.add("engine_decrypt_pps_64_with_1_inbound_policy", p1, "packets/s",
             "decap + inbound policy check (selector + InboundPolicyTable::check), 1 policy");
  report.add("engine_decrypt_pps_64_with_" + n + "_inbound_policies", pn, "packets/s",
             "the same, the SA's policy last of " + n + " (the others: other SAs, better priority)");
  report.add("engine_decrypt_" + n + "_vs_1_inbound_policies_ratio", pn / p1, "ratio",
             n + " inbound policies vs 1, runs alternated");
}

// The engine on each crypto backend (crypto_backend.h), each against the raw
// records/s of its own library; `*_ipsecmb_vs_openssl` compares the engine on
// intel-ipsec-mb with the engine on OpenSSL (> 1: ipsec-mb is faster).
void run_engine_benchmarks(Report& report, const Timing& t, const EngineSelection& only) {
  auto wanted = [](const auto& list, const auto& v) {
    return list.empty() || std::find(list.begin(), list.end(), v) != list.end();
  };
  const bool imb = esp::ipsecmb_info().usable;
  if (!imb) report.add_note("*_ipsecmb", "intel-ipsec-mb cannot run here: " + esp::ipsecmb_info().error);
  for (const auto& c : kCiphers) {
    if (!wanted(only.ciphers, std::string(c.label))) continue;
    for (uint32_t size : kSizes) {
      if (!wanted(only.sizes, size)) continue;
      set_stage("engine: " + std::string(c.label) + " " + std::to_string(size) + " B");
      esp::select_crypto_backend(esp::CryptoBackend::OpenSsl);
      RawOpenSslAead raw_openssl(c.evp_name, size);
      const EngineRates o = measure_engine(c, size, t, RawAead::of(raw_openssl));
      const double raw = o.raw, enc = o.enc, dec = o.dec;
      const std::string sz = std::to_string(size);
      const bool primary = c.alg == EncAlg::AesGcm128;
      const std::string suffix = primary ? "" : std::string("_") + c.label;
      report.add("raw_aead_records_per_s_" + sz + "_" + c.label, raw, "records/s",
                 "OpenSSL EVP, prepared context, sealing (the encapsulation ratios' baseline)");
      report.add("raw_aead_open_records_per_s_" + sz + "_" + c.label, o.raw_open, "records/s",
                 "OpenSSL EVP, prepared context, opening (decrypt + tag check: the decapsulation ratios' baseline)");
      report.add("engine_encrypt_pps_" + sz + "_" + c.label, enc, "packets/s", "tunnel encapsulation");
      report.add("engine_decrypt_pps_" + sz + "_" + c.label, dec, "packets/s", "decapsulation incl. replay check");
      report.add("engine_encrypt_ratio_" + sz + suffix, o.enc_ratio, "ratio",
                 std::string(c.label) + " encapsulation / raw sealing");
      report.add("engine_decrypt_ratio_" + sz + suffix, o.dec_ratio, "ratio",
                 std::string(c.label) + " decapsulation / raw opening");
      report.add("raw_aead_open_frames_records_per_s_" + sz + "_" + c.label, o.raw_open_frames, "records/s",
                 "OpenSSL opening in place in 64 frames laid out as the engine's batch (not one hot buffer)");
      report.add("engine_decrypt_ratio_" + sz + suffix + "_vs_frames", o.dec_ratio_frames, "ratio",
                 std::string(c.label) + " decapsulation / raw opening in the same frames: the ESP work alone");
      if (!imb) continue;
      esp::select_crypto_backend(esp::CryptoBackend::IpsecMb);
      RawIpsecMbAead raw_ipsecmb(c, size);
      const EngineRates m = measure_engine(c, size, t, RawAead::of(raw_ipsecmb));
      const double raw_imb = m.raw, enc_imb = m.enc, dec_imb = m.dec;
      esp::select_crypto_backend(esp::CryptoBackend::OpenSsl);
      report.add("raw_ipsecmb_records_per_s_" + sz + "_" + c.label, raw_imb, "records/s",
                 "intel-ipsec-mb direct API, expanded key");
      report.add("raw_ipsecmb_open_records_per_s_" + sz + "_" + c.label, m.raw_open, "records/s",
                 "intel-ipsec-mb direct API, opening (decrypt + tag compare)");
      report.add("engine_encrypt_pps_" + sz + "_" + c.label + "_ipsecmb", enc_imb, "packets/s",
                 "tunnel encapsulation, ipsec-mb backend");
      report.add("engine_decrypt_pps_" + sz + "_" + c.label + "_ipsecmb", dec_imb, "packets/s",
                 "decapsulation, ipsec-mb backend");
      report.add("engine_encrypt_ratio_" + sz + suffix + "_ipsecmb", m.enc_ratio, "ratio",
                 std::string(c.label) + " engine/raw ipsec-mb");
      report.add("engine_decrypt_ratio_" + sz + suffix + "_ipsecmb", m.dec_ratio, "ratio",
                 std::string(c.label) + " engine/raw ipsec-mb");
      report.add("raw_ipsecmb_open_frames_records_per_s_" + sz + "_" + c.label, m.raw_open_frames, "records/s",
                 "intel-ipsec-mb opening in place in 64 frames laid out as the engine's batch");
      report.add("engine_decrypt_ratio_" + sz + suffix + "_ipsecmb_vs_frames", m.dec_ratio_frames, "ratio",
                 std::string(c.label) + " decapsulation / raw ipsec-mb opening in the same frames");
      report.add("engine_encrypt_" + sz + "_" + c.label + "_ipsecmb_vs_openssl", enc_imb / enc, "ratio",
                 "engine pps ipsec-mb/openssl");
      report.add("engine_decrypt_" + sz + "_" + c.label + "_ipsecmb_vs_openssl", dec_imb / dec, "ratio",
                 "engine pps ipsec-mb/openssl");
    }
  }
  if (imb && wanted(only.ciphers, std::string("aes128gcm"))) {
    for (uint32_t size : kSizes) {
      if (!wanted(only.sizes, size)) continue;
      const std::string sz = std::to_string(size);
      set_stage("engine: intel-ipsec-mb burst vs direct " + std::to_string(size) + " B");
      const BurstVsDirect r = ipsecmb_gcm_burst_vs_direct(size, t);
      report.add("raw_ipsecmb_gcm_direct_records_per_cpu_s_" + sz, r.direct, "records/s",
                 "AES-128-GCM, direct API, one record per call (the engine's path), per thread CPU-second");
      report.add("raw_ipsecmb_gcm_burst32_records_per_cpu_s_" + sz, r.burst, "records/s",
                 "the same records 32 per IMB_SUBMIT_BURST (job API), output checked equal");
      report.add("ipsecmb_gcm_burst32_vs_direct_" + sz, r.burst / r.direct, "ratio",
                 "> 1 would make batching the worker's AF_XDP batch through the job API pay");
    }
  }
}

}  // namespace ov2::bench

#ifndef OV2_BENCH_SCRIPTS_DIR
#define OV2_BENCH_SCRIPTS_DIR "scripts/bench"
#endif
#ifndef OV2_BENCH_BUILD_DIR
#define OV2_BENCH_BUILD_DIR "build"
#endif

int main(int argc, char** argv) {
  CLI::App app{"ipsecov2-bench: ESP engine and data-plane throughput against baselines measured in the same run.\n"
               "Groups: engine (default), pipeline, control and tcp (these three need root: they create network\n"
               "namespaces, BPF programs and AF_XDP sockets, control and tcp start ipsecov2d; run with sudo)."};
  bool quick = false, all = false, tcp = false, control_no_wire = false;
  std::string json_path;
  std::vector<std::string> only, pipeline_cases;
  uint32_t sa_count = 0;
  unsigned tcp_seconds = 10;
  std::string scripts_dir = OV2_BENCH_SCRIPTS_DIR, build_dir = OV2_BENCH_BUILD_DIR;
  app.add_flag("--quick", quick, "run every measurement briefly (a smoke check); control: 10000 SAs");
  app.add_option("--json", json_path, "also write the results as JSON to this file");
  app.add_option("--only", only,
                 "run only these groups: engine, pipeline, control, tcp, policy (engine's inbound policy keys)")
      ->check(CLI::IsMember({"engine", "pipeline", "control", "tcp", "policy"}));
  app.add_flag("--all", all, "run every group (engine, pipeline, control, tcp); all but engine need root");
  app.add_flag("--tcp", tcp,
               "also run the tcp group (needs root): iperf3 through ipsecov2, the plain veth and strongSwan "
               "(scripts/bench/tcp_*.sh), tcp_ratio_vs_strongswan = ov2/strongswan");
  ov2::bench::EngineSelection engine_only;
  app.add_option("--engine-ciphers", engine_only.ciphers, "engine group: only these ciphers (default all)")
      ->check(CLI::IsMember({"aes128gcm", "aes256gcm", "chacha20poly1305"}));
  app.add_option("--engine-sizes", engine_only.sizes, "engine group: only these packet sizes (default all)")
      ->check(CLI::IsMember({"64", "512", "1400"}));
  app.add_option("--pipeline-cases", pipeline_cases, "pipeline group: only these cases (default all)")
      ->check(CLI::IsMember({"encap64", "decap64", "encap1400", "decap1400", "scaling"}));
  app.add_option("--tcp-seconds", tcp_seconds, "iperf3 duration per tcp run (default 10)")->check(CLI::Range(1, 600));
  app.add_option("--sa-count", sa_count, "control group: SAs per direction (default 100000, --quick 10000)")
      ->check(CLI::Range(1, 1000000));
  app.add_flag("--control-no-wire", control_no_wire,
               "control group: run ipsecov2d without --wire (default: in a private netns on a veth wire, so that "
               "inbound SAs reach the data plane's BPF map)");
  app.add_option("--scripts-dir", scripts_dir, "where tcp_*.sh are (default: the source tree's scripts/bench)");
  app.add_option("--build-dir", build_dir, "build directory with ctl/ipsecov2d and ctl/ipsecov2ctl (default: this build)");
  CLI11_PARSE(app, argc, argv);

  const ov2::bench::Timing timing = quick ? ov2::bench::Timing{0.15, 3} : ov2::bench::Timing{1.0, 5};
  ov2::bench::Report report;
  auto listed = [&](const char* group) { return std::find(only.begin(), only.end(), group) != only.end(); };
  const bool run_engine = all || only.empty() || listed("engine");
  const bool run_pipeline = all || listed("pipeline");
  const bool run_control = all || listed("control");
  const bool run_tcp = all || tcp || listed("tcp");
  if ((run_pipeline || run_control || run_tcp) && geteuid() != 0) {
    std::fprintf(stderr, "ipsecov2-bench: the pipeline, control and tcp groups need root (run with sudo)\n");
    return 2;
  }
  ov2::bench::install_interrupt_handlers();
  if (geteuid() == 0) ov2::bench::sweep_stale_leftovers(stderr);
  int rc = 0;
  try {
    if (run_engine) {
      ov2::bench::set_stage("engine");
      ov2::bench::run_engine_benchmarks(report, timing, engine_only);
    }
    if (run_engine || listed("policy")) {
      ov2::bench::set_stage("policy: decapsulation + 1 vs 1000 inbound policies");
      ov2::bench::run_inbound_policy_benchmarks(report, timing, 1000);
    }
    if (run_pipeline) {
      try {
        ov2::bench::run_pipeline_benchmarks(report, timing, pipeline_cases);
      } catch (const std::exception& e) {
        ov2::bench::check_interrupt();
        std::fprintf(stderr, "ipsecov2-bench: pipeline: %s\n", e.what());
        report.add_note("pipeline", e.what());
        rc = 1;
      }
    }
    if (run_control) {
      const uint32_t n = sa_count ? sa_count : (quick ? 10000u : 100000u);
      ov2::bench::set_stage("control: in-process SA table with " + std::to_string(n) + " SAs", true);
      ov2::bench::run_sa_scale_benchmarks(report, timing, n);
      try {
        ov2::bench::run_control_benchmarks(report, {build_dir + "/ctl/ipsecov2d", n, !control_no_wire, quick ? 3.0 : 10.0});
      } catch (const std::exception& e) {
        ov2::bench::check_interrupt();
        std::fprintf(stderr, "ipsecov2-bench: %s\n", e.what());
        report.add_note("control", e.what());
        rc = 1;
      }
    }
    if (run_tcp) ov2::bench::run_tcp_benchmarks(report, scripts_dir, build_dir, tcp_seconds);
  } catch (const ov2::bench::Interrupted&) {
    // Everything the groups set up is gone by now (unwound); what was
    // measured before still counts.
    ov2::bench::wait_if_forced_exit();
    const int sig = ov2::bench::interrupt_signal();
    const char* name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    const std::string stage = ov2::bench::current_stage();
    report.add_note(stage, std::string("interrupted by ") + name);
    report.print_table(stdout);
    report.print_notes(stdout);
    std::fflush(stdout);
    std::fprintf(stderr, "ipsecov2-bench: interrupted by %s during %s; stopped and cleaned up%s\n", name, stage.c_str(),
                 json_path.empty() ? "" : (", no JSON written to " + json_path).c_str());
    return 128 + sig;
  }
  ov2::bench::wait_if_forced_exit();
  report.print_table(stdout);
  report.print_notes(stdout);
  if (!json_path.empty() && !report.write_json(json_path)) {
    std::fprintf(stderr, "ipsecov2-bench: cannot write %s\n", json_path.c_str());
    return 2;
  }
  return rc;
}
