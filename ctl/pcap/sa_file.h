// The pcap tool's SA file: one SA object or a list of them, in the JSON shape
// of model/sa_json.h (keys = `ipsecov2ctl sa add` long options without the
// dashes).  In a list, `inner` is the index of the transport SA that a tunnel
// SA carries (a bundle).
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "model/sa_spec.h"

namespace ov2::pcap {

struct SaFileEntry {
  SaSpec spec;
  std::optional<size_t> inner;  // index (into the same list) of the transport SA inside this tunnel SA
  bool is_inner = false;        // some other SA of the list carries this one as its `inner`
};

// Parses and validates the SAs of `doc`.  `origin` (the file name) starts every
// error message, followed by the SA index ("SA.json: SA 2: 'enc-key' ...").
// Bundle rules: `inner` is an index of another SA with the same direction, in
// transport mode, not itself a bundle and not used by two bundles.  Throws
// ov2::Error(InvalidArgument); messages never contain key bytes.
std::vector<SaFileEntry> parse_sa_list(const nlohmann::json& doc, const std::string& origin);

// Reads `path` and parses it with parse_sa_list.  Throws ov2::Error naming the
// file when it cannot be read or is not JSON (never quoting its text, which
// holds keys).
std::vector<SaFileEntry> load_sa_file(const std::string& path);

}  // namespace ov2::pcap
