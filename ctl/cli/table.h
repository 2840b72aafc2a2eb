// Aligned text tables for ipsecov2ctl's human output.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace ov2 {

class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header) : header_(std::move(header)) {}
  void add_row(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  // Writes the header and rows, columns padded to their widest cell, two spaces apart.
  void print(std::ostream& out) const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace ov2
