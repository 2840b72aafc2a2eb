// Reading key material for ipsecov2ctl: keys come from files or standard
// input, never from the command line.
#pragma once

#include <string>

namespace ov2 {

// Reads the hex text of a key file ("-" = standard input), at most 4 KiB.
// Returns the text as read (the daemon parses the hex: optional 0x,
// whitespace ignored).  Throws ov2::Error with "cannot read key file PATH:
// REASON".  The caller wipes the returned string after use.
std::string read_key_text(const std::string& path);

}  // namespace ov2
