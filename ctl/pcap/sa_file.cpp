#include "pcap/sa_file.h"

#include <fstream>
#include <optional>
#include <sstream>

#include "common/error.h"
#include "model/algorithms.h"
#include "model/sa_json.h"

namespace ov2::pcap {

using nlohmann::json;

namespace {

// validate_sa() reports a key of the wrong length by algorithm; the SA file's
// user needs the field.  Returns the key field of `item` whose length does not
// fit its algorithm, or "" (also when the item is too broken to tell).
std::string key_field_with_wrong_length(const json& item) {
  auto length_of = [&](const char* field) -> std::optional<size_t> {
    auto it = item.find(field);
    if (it == item.end() || !it->is_string()) return std::nullopt;
    try {
      return SecureBytes::from_hex(it->get<std::string>()).size();
    } catch (const Error&) {
      return std::nullopt;
    }
  };
  auto name_of = [&](const char* field) -> std::string {
    auto it = item.find(field);
    return it != item.end() && it->is_string() ? it->get<std::string>() : "";
  };
  try {
    if (item.contains("aead")) {
      const EncAlgInfo& a = info(parse_aead_alg(name_of("aead")));
      const auto n = length_of("key");
      if (name_of("aead") != a.xfrm_name && n && *n != size_t(a.key_len) + a.salt_len) return "key";
      return "";
    }
    if (item.contains("enc")) {
      const EncAlgInfo& e = info(parse_enc_alg(name_of("enc")));
      const auto n = length_of("enc-key");
      if (name_of("enc") != e.xfrm_name && n && *n != size_t(e.key_len) + e.salt_len) return "enc-key";
    }
    if (item.contains("auth")) {
      const AuthAlgInfo& a = info(parse_auth_alg(name_of("auth")));
      const auto n = length_of("auth-key");
      if (name_of("auth") != a.xfrm_name && n && *n != size_t(a.key_len) + a.salt_len) return "auth-key";
    }
  } catch (const Error&) {
  }
  return "";
}

}  // namespace

std::vector<SaFileEntry> parse_sa_list(const json& doc, const std::string& origin) {
  const bool single = doc.is_object();
  if (!single && !doc.is_array())
    fail(ErrorCode::InvalidArgument, origin + ": must hold one SA object or a list of SA objects");
  if (doc.is_array() && doc.empty()) fail(ErrorCode::InvalidArgument, origin + ": the SA list is empty");

  std::vector<SaFileEntry> entries;
  std::vector<json> inner_refs;
  const size_t count = single ? 1 : doc.size();
  for (size_t i = 0; i < count; ++i) {
    const json& item = single ? doc : doc[i];
    json inner_ref;
    SaFileEntry entry;
    try {
      entry.spec = sa_spec_from_json(item, &inner_ref);
    } catch (const Error& e) {
      // sa_spec_from_json names the field and never quotes key bytes.
      const std::string field = key_field_with_wrong_length(item);
      fail(e.code(),
           origin + ": SA " + std::to_string(i) + ": " + (field.empty() ? "" : "'" + field + "': ") + e.what());
    }
    entries.push_back(std::move(entry));
    inner_refs.push_back(std::move(inner_ref));
  }

  for (size_t i = 0; i < count; ++i) {
    const json& ref = inner_refs[i];
    if (ref.is_null()) continue;
    const std::string where = origin + ": SA " + std::to_string(i) + ": 'inner' ";
    if (!ref.is_number_unsigned())
      fail(ErrorCode::InvalidArgument, where + "must be the index of the transport SA in this file's list");
    const uint64_t idx = ref.get<uint64_t>();
    if (idx >= count)
      fail(ErrorCode::InvalidArgument, where + "is " + std::to_string(idx) + " but the file has only " +
                                           std::to_string(count) + " SA(s) (indexes start at 0)");
    if (idx == i) fail(ErrorCode::InvalidArgument, where + "points at the SA itself");
    SaFileEntry& inner = entries[idx];
    if (inner.spec.mode != Mode::Transport)
      fail(ErrorCode::InvalidArgument,
           where + "points at SA " + std::to_string(idx) + ", which is not in transport mode");
    if (inner.spec.dir != entries[i].spec.dir)
      fail(ErrorCode::InvalidArgument,
           where + "points at SA " + std::to_string(idx) + ", which has the other direction");
    if (!inner_refs[idx].is_null())
      fail(ErrorCode::InvalidArgument, where + "points at SA " + std::to_string(idx) + ", which is itself a bundle");
    if (inner.is_inner)
      fail(ErrorCode::InvalidArgument,
           where + "points at SA " + std::to_string(idx) + ", which another SA already carries");
    inner.is_inner = true;
    entries[i].inner = idx;
  }
  return entries;
}

std::vector<SaFileEntry> load_sa_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorCode::InvalidArgument, path + ": cannot open the SA file");
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) fail(ErrorCode::InvalidArgument, path + ": cannot read the SA file");
  json doc;
  try {
    doc = json::parse(text.str());
  } catch (const json::parse_error& e) {
    // e.what() may quote the text around the error, and the text holds keys.
    fail(ErrorCode::InvalidArgument, path + ": not valid JSON (syntax error at byte " + std::to_string(e.byte) + ")");
  }
  return parse_sa_list(doc, path);
}

}  // namespace ov2::pcap
