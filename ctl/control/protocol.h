// The control protocol between ipsecov2ctl (or any client) and ipsecov2d.
//
// Transport: a Unix stream socket.  Framing: newline-delimited JSON — each
// request is one JSON object on one line (compact JSON never contains a raw
// newline), each answer is one JSON object on one line, in order.  A client
// may send several requests on one connection.
//
// Request:  {"version":1,"op":"sa.add", ...op fields}
// Answer:   {"ok":true, ...}  or
//           {"ok":false,"error":{"code":"invalid-argument","message":"..."}}
//
// Ops and their fields:
//   caps                                     -> {"caps":{NDIS_IPSEC_OFFLOAD_V2 fields + extras}}
//   sa.add     {"sa":{SA JSON, sa_json.h}}   -> {"handle":"0x..."}
//   sa.add     {"sas":[{SA JSON},...]}       -> {"handles":["0x...",...]}  (a batch: 1 to
//              kMaxBatchSas SAs, all installed or none; an error names the entry as
//              "sas[I]: ..." (0-based); the handles come in the order of the list.
//              With the state file on, the batch costs one journal write + fdatasync.)
//   sa.del     {"handles":["0x..",...], "force":bool}
//                                            -> {"deleted":[...], "deleted_policies":[ids]}
//   sa.update  {"handle":"0x..","seq-hi":N}  -> {}
//   sa.list                                  -> {"sas":[{"handle":"0x..", public SA JSON}]}
//   sa.show    {"handle":"0x.."}             -> {"sa":{...}}
//   policy.add {"policy":{policy JSON}}      -> {"id":N}
//   policy.update {"id":N,"sa":"0x.."}       -> {}   (a protect policy's SA, switched in one step)
//   policy.del {"ids":[N,...]}               -> {"deleted":[N,...]}
//   policy.list                              -> {"policies":[{"id":N, policy JSON}]}
// (room for "stats" and "monitor" later.)
//
// Limits: a request line is at most kMaxRequestBytes, 4 MiB: room for a batch of
// kMaxBatchSas SAs with keys (~250 bytes each) (bigger: an error answer,
// then the connection is closed); a request must be complete within
// kReadTimeoutMs of the connection opening or of the previous answer; at most
// kMaxConnections connections at once.  Errors that are not the client's
// request (permission, limits) use the codes "permission-denied",
// "too-large", "timeout", "busy".  Answers never contain key bytes.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>

namespace ov2 {

inline constexpr int kProtocolVersion = 1;
inline constexpr size_t kMaxRequestBytes = 4 * 1024 * 1024;
inline constexpr size_t kMaxBatchSas = 10000;
inline constexpr int kReadTimeoutMs = 5000;
inline constexpr size_t kMaxConnections = 32;
inline constexpr const char* kDefaultSocketPath = "/run/ipsecov2/ipsecov2.sock";

// One answer line (with the trailing newline).
std::string error_line(const std::string& code, const std::string& message);
std::string answer_line(const nlohmann::json& answer);

// Overwrites the key material of a parsed request (the hex strings of "key",
// "enc-key", "auth-key" anywhere inside) so it does not linger on the heap.
void wipe_secrets(nlohmann::json& j);

}  // namespace ov2
