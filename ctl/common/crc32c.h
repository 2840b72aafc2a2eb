// CRC32C (Castagnoli, the iSCSI/ext4 checksum; RFC 3720 B.4): the state
// journal's record checksum.  With SSE4.2 (checked at run time) the CPU's
// crc32 instruction does 8 bytes a step; elsewhere a byte table does one.
#pragma once

#include <cstdint>
#include <string_view>

namespace ov2 {

// CRC32C of `data`; pass a previous result as `crc` to continue it.
uint32_t crc32c(std::string_view data, uint32_t crc = 0);

// The two implementations crc32c() picks from (tests check both).
uint32_t crc32c_table(std::string_view data, uint32_t crc = 0);
// Only when crc32c_hardware_available(); same results as crc32c_table.
uint32_t crc32c_hardware(std::string_view data, uint32_t crc = 0);
bool crc32c_hardware_available();

}  // namespace ov2
