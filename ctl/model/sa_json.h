// SAs and policies as JSON objects whose keys are the `ipsecov2ctl sa add` /
// `policy add` long option names without the dashes: dir, mode, src, dst,
// spi, aead, key, enc, enc-key, auth, auth-key, esn, seq-hi, encap,
// encap-sport, encap-dport, replay-window, lifetime-packets ("SOFT,HARD" or
// [soft, hard]), lifetime-bytes, lifetime-seconds, inner.  Key material is a
// hex string.  Used by the control protocol and by the pcap tool's SA file.
#pragma once

#include <array>
#include <nlohmann/json.hpp>
#include <string_view>

#include "model/policy_spec.h"
#include "model/sa_spec.h"

namespace ov2 {

// The keys of an SA object (sa_spec_from_json refuses others).
inline constexpr std::array<std::string_view, 21> kSaSpecKeys = {"dir",
                                                                 "mode",
                                                                 "src",
                                                                 "dst",
                                                                 "spi",
                                                                 "aead",
                                                                 "key",
                                                                 "enc",
                                                                 "enc-key",
                                                                 "auth",
                                                                 "auth-key",
                                                                 "esn",
                                                                 "seq-hi",
                                                                 "encap",
                                                                 "encap-sport",
                                                                 "encap-dport",
                                                                 "replay-window",
                                                                 "lifetime-packets",
                                                                 "lifetime-bytes",
                                                                 "lifetime-seconds",
                                                                 "inner"};

// Parses and validates (validate_sa).  `inner` is returned raw in
// `inner_ref` (a handle string "0x..." for the daemon, an index into the list
// for the SA file) and left to the caller to resolve.  Unknown keys are
// errors.  Messages name the key, never the key bytes.
SaSpec sa_spec_from_json(const nlohmann::json& j, nlohmann::json* inner_ref = nullptr);

// The public view of an SA: everything but key bytes (algorithm names and key
// lengths only).
nlohmann::json sa_spec_public_json(const SaSpec& sa);

PolicySpec policy_spec_from_json(const nlohmann::json& j);
nlohmann::json policy_spec_json(const PolicySpec& p);

std::string handle_to_string(uint64_t handle);           // "0x..." lower-case hex
uint64_t parse_handle(std::string_view text);             // throws InvalidArgument

}  // namespace ov2
