// Reading key material for ipsecov2ctl: keys come from files or standard
// input, never from the command line.
#pragma once

#include <cstddef>
#include <string>

namespace ov2 {

// Reads the hex text of a key file ("-" = standard input), at most 4 KiB.
// Returns the text as read (the daemon parses the hex: optional 0x,
// whitespace ignored).  Throws ov2::Error with "cannot read key file PATH:
// REASON".  The caller wipes the returned string after use.
std::string read_key_text(const std::string& path);

// The same for any file holding key material (e.g. an SA batch, JSON with
// keys in hex), at most `max_bytes`.  `kind` names it in messages ("batch
// file PATH"); `too_large_hint` and `what` finish the too-large and empty
// messages.  The caller wipes the returned string after use.
std::string read_secret_file(const std::string& path, size_t max_bytes, const std::string& kind,
                             const std::string& too_large_hint, const std::string& what);

}  // namespace ov2
