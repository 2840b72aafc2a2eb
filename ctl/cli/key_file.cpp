#include "cli/key_file.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace ov2 {

std::string read_key_text(const std::string& path) {
  return read_secret_file(path, 4096, "key file", "it should hold one key in hex", "the key in hex");
}

std::string read_secret_file(const std::string& path, size_t max_bytes, const std::string& kind,
                             const std::string& too_large_hint, const std::string& what) {
  const bool stdin_key = path == "-";
  const std::string shown = stdin_key ? "standard input" : kind + " " + path;
  const int fd = stdin_key ? STDIN_FILENO : open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorCode::InvalidArgument, "cannot read " + shown + ": " + std::strerror(errno));
  std::string text;
  char buf[4097];
  text.reserve(std::min<size_t>(max_bytes + 1, 1 << 20));
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      if (!stdin_key) close(fd);
      OPENSSL_cleanse(text.data(), text.size());
      fail(ErrorCode::InvalidArgument, "cannot read " + shown + ": " + std::strerror(err));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    OPENSSL_cleanse(buf, sizeof buf);
    if (text.size() > max_bytes) {
      if (!stdin_key) close(fd);
      OPENSSL_cleanse(text.data(), text.size());
      fail(ErrorCode::InvalidArgument,
           shown + " is larger than " + std::to_string(max_bytes) + " bytes; " + too_large_hint);
    }
  }
  if (!stdin_key) close(fd);
  if (text.find_first_not_of(" \t\r\n") == std::string::npos)
    fail(ErrorCode::InvalidArgument, shown + " is empty; it should hold " + what);
  return text;
}

}  // namespace ov2
