#include "control/protocol.h"

#include <openssl/crypto.h>

namespace ov2 {

std::string error_line(const std::string& code, const std::string& message) {
  return answer_line({{"ok", false}, {"error", {{"code", code}, {"message", message}}}});
}

std::string answer_line(const nlohmann::json& answer) {
  // Replace invalid UTF-8 rather than throw: messages may quote user input.
  return answer.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

void wipe_secrets(nlohmann::json& j) {
  if (j.is_object()) {
    for (auto& [k, v] : j.items()) {
      if ((k == "key" || k == "enc-key" || k == "auth-key") && v.is_string()) {
        auto& s = v.get_ref<std::string&>();
        OPENSSL_cleanse(s.data(), s.size());
      } else {
        wipe_secrets(v);
      }
    }
  } else if (j.is_array()) {
    for (auto& v : j) wipe_secrets(v);
  }
}

}  // namespace ov2
