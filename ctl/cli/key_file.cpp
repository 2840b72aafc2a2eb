#include "cli/key_file.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace ov2 {

std::string read_key_text(const std::string& path) {
  const bool stdin_key = path == "-";
  const std::string shown = stdin_key ? "standard input" : "key file " + path;
  const int fd = stdin_key ? STDIN_FILENO : open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorCode::InvalidArgument, "cannot read " + shown + ": " + std::strerror(errno));
  std::string text;
  char buf[4097];
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
    if (text.size() > 4096) {
      if (!stdin_key) close(fd);
      OPENSSL_cleanse(text.data(), text.size());
      fail(ErrorCode::InvalidArgument, shown + " is larger than 4096 bytes; it should hold one key in hex");
    }
  }
  if (!stdin_key) close(fd);
  if (text.find_first_not_of(" \t\r\n") == std::string::npos)
    fail(ErrorCode::InvalidArgument, shown + " is empty; it should hold the key in hex");
  return text;
}

}  // namespace ov2
