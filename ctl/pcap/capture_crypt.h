// Offline ESP over capture files: `ipsecov2ctl pcap encrypt|decrypt`.  Reads
// pcap or pcapng through libpcap, runs every packet through the ESP engine
// (ctl/esp) like the AF_XDP worker would, and writes a pcap file.
//
// encrypt: each IP packet goes to the first outbound SA that takes it, in this
//   order: (1) a transport SA, or a bundle whose inner transport SA, has the
//   packet's source and destination; (2) a tunnel SA whose outer family is the
//   packet's family; (3) any tunnel SA (4-in-6 / 6-in-4).  `spi` restricts the
//   choice to the SA with that SPI.  Packets no SA takes (and non-IP frames)
//   are written unchanged and counted.  The output keeps the input's link type
//   (Ethernet keeps MACs and VLAN tags; DLT_IPV4/DLT_IPV6 input is written as
//   DLT_RAW because tunnel mode may change the family) and timestamps.
// decrypt: ESP (IP protocol 50, or UDP to port 4500 / an inbound SA's encap
//   port with a non-zero SPI) is opened with the inbound SA found by (SPI,
//   destination); a tunnel SA with `inner` opens the transport SA inside too.
//   The output is always Ethernet: Ethernet input keeps its MACs and tags,
//   raw-IP input gets 02:00:00:00:00:01 -> 02:00:00:00:00:02 and the EtherType
//   of the recovered packet.  Non-ESP frames are written unchanged; ESP that
//   does not open is counted by NDIS CryptoStatus and reason (and written
//   unchanged only with keep_failed).  The anti-replay window runs as on a live
//   receiver unless no_replay.
// Time: packet timestamps drive the SA lifetimes (the SAs are created at the
//   first packet's time).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pcap/sa_file.h"

namespace ov2::pcap {

struct CryptOptions {
  std::string input;                    // pcap or pcapng
  std::string output;                   // pcap
  std::string sa_file = "the SA file";  // names the SA file in messages
  std::optional<uint32_t> spi;          // encrypt: use only the outbound SA with this SPI
  bool keep_failed = false;             // write packets that failed unchanged instead of leaving them out
  bool no_replay = false;               // decrypt: anti-replay window off
};

// What happened to the packets of one run.
struct CryptSummary {
  std::string command;              // "encrypt" or "decrypt"
  uint64_t packets = 0;             // frames read
  uint64_t esp = 0;                 // decrypt: frames that carry ESP
  uint64_t ok = 0;                  // encrypted / opened (and written)
  uint64_t failed = 0;              // ESP that did not open / packets an SA refused
  uint64_t passed_through = 0;      // written unchanged: not ESP (decrypt), no SA or not IP (encrypt)
  uint64_t dummy = 0;               // decrypt: authenticated dummy packets (next header 59), not written
  uint64_t sa_delete_requests = 0;  // decrypt: packets on which an SA raised SaDeleteReq
  uint64_t written = 0;             // frames in the output file
  // (status, reason) -> packets.  decrypt status: an NDIS CryptoStatus name,
  // NOT_CHECKED (no CryptoDone: unknown SPI, truncated before the SPI, outside
  // the SA's capabilities) or NOT_ESP; encrypt status: ENCRYPTED, PASSED, FAILED.
  std::map<std::pair<std::string, std::string>, uint64_t> outcomes;

  // 0 when every ESP packet opened (decrypt) / every chosen SA took its packet
  // (encrypt), else 1.
  int exit_code() const { return failed == 0 ? 0 : 1; }
};

// Runs encrypt over `opt.input` into `opt.output` with the outbound SAs of
// `sas`.  Throws ov2::Error(InvalidArgument) for file errors, an unsupported
// link type or an SA file without outbound SAs.
CryptSummary encrypt_capture(const std::vector<SaFileEntry>& sas, const CryptOptions& opt);

// Runs decrypt with the inbound SAs of `sas`.  Throws like encrypt_capture.
CryptSummary decrypt_capture(const std::vector<SaFileEntry>& sas, const CryptOptions& opt);

// Human-readable summary (several lines) and its JSON form.
std::string summary_text(const CryptSummary& s);
nlohmann::json summary_json(const CryptSummary& s);

// "CRYPTO_SUCCESS", ... for an NDIS CryptoStatus value.
const char* crypto_status_name(uint32_t status);

}  // namespace ov2::pcap
