// The systemd unit and the Debian package: `systemd-analyze verify` accepts
// the unit (pointing at the built daemon) without a word; the .deb built by
// scripts/package.sh holds the daemon, the CLI, the unit and the
// configuration file as a conffile, and dpkg installs it into a scratch root
// (never into the real root file system).  The package tests skip when
// build-pkg/ has no .deb yet (run scripts/package.sh).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "e2e/service_harness.h"

namespace {

using namespace ov2svc;
using ::testing::HasSubstr;

const std::string kUnit = OV2_SOURCE_DIR "/ctl/systemd/ipsecov2d.service";

class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name) : path_("/tmp/ov2s" + std::to_string(getpid()) + name) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  const std::string& str() const { return path_; }

 private:
  std::string path_;
};

TEST(ServiceUnit, SystemdAnalyzeVerifyAcceptsTheUnitWithoutOutput) {
  ScratchDir dir("unit");
  std::string unit = read_file(kUnit);
  ASSERT_THAT(unit, HasSubstr("ExecStart=/usr/sbin/ipsecov2d "));
  unit.replace(unit.find("/usr/sbin/ipsecov2d"), std::strlen("/usr/sbin/ipsecov2d"), kDaemon);
  write_file(dir.str() + "/ipsecov2d.service", unit);
  const Result r = run({"systemd-analyze", "verify", dir.str() + "/ipsecov2d.service"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out + r.err, "");
  // What the daemon implements is what the unit asks for.
  EXPECT_THAT(unit, HasSubstr("Type=notify\n"));
  EXPECT_THAT(unit, HasSubstr("ExecReload=/bin/kill -HUP $MAINPID\n"));
  EXPECT_THAT(unit, HasSubstr("WatchdogSec="));
  EXPECT_THAT(unit, HasSubstr("RuntimeDirectory=ipsecov2\n"));
}

TEST(ServiceUnit, VerifyReportsABrokenUnitSoTheCheckAboveCanFail) {
  ScratchDir dir("badunit");
  std::string unit = read_file(kUnit);
  unit.replace(unit.find("/usr/sbin/ipsecov2d"), std::strlen("/usr/sbin/ipsecov2d"), dir.str() + "/no-such-daemon");
  write_file(dir.str() + "/ipsecov2d.service", unit);
  const Result r = run({"systemd-analyze", "verify", dir.str() + "/ipsecov2d.service"});
  EXPECT_NE(r.out + r.err, "");
}

// The newest .deb in build-pkg/, or "".
std::string built_deb() {
  std::string newest;
  std::filesystem::file_time_type when{};
  const std::filesystem::path dir = OV2_SOURCE_DIR "/build-pkg";
  if (!std::filesystem::is_directory(dir)) return "";
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".deb" && (newest.empty() || e.last_write_time() > when)) {
      newest = e.path().string();
      when = e.last_write_time();
    }
  return newest;
}

TEST(ServicePackage, DebHoldsDaemonCliUnitAndConfigAsConffile) {
  const std::string deb = built_deb();
  if (deb.empty()) GTEST_SKIP() << "no .deb in build-pkg/: run scripts/package.sh first";
  const Result contents = run({"dpkg-deb", "-c", deb});
  ASSERT_EQ(contents.exit_code, 0) << contents.err;
  EXPECT_THAT(contents.out, HasSubstr(" ./usr/sbin/ipsecov2d\n"));
  EXPECT_THAT(contents.out, HasSubstr(" ./usr/sbin/ipsecov2ctl\n"));
  EXPECT_TRUE(contents.out.find(" ./lib/systemd/system/ipsecov2d.service\n") != std::string::npos ||
              contents.out.find(" ./usr/lib/systemd/system/ipsecov2d.service\n") != std::string::npos)
      << contents.out;
  EXPECT_THAT(contents.out, HasSubstr(" ./etc/ipsecov2/ipsecov2d.conf\n"));
  for (const char* page : {"man8/ipsecov2d.8", "man8/ipsecov2ctl.8", "man5/ipsecov2d.conf.5"})
    EXPECT_THAT(contents.out, HasSubstr(std::string(" ./usr/share/man/") + page)) << contents.out;
  const Result conffiles = run({"dpkg-deb", "-I", deb, "conffiles"});
  EXPECT_EQ(conffiles.exit_code, 0) << conffiles.err;
  EXPECT_THAT(conffiles.out, HasSubstr("/etc/ipsecov2/ipsecov2d.conf"));
  const Result info = run({"dpkg-deb", "-I", deb});
  EXPECT_THAT(info.out, HasSubstr("Package: ipsecov2"));
  EXPECT_THAT(info.out, HasSubstr("Depends:"));
}

// dpkg -i --root into a scratch root with its own dpkg database.  The
// maintainer scripts run chrooted there (a copy of dash is the /bin/sh they
// need); they see no /run/systemd/system, so nothing reaches the host.
TEST(ServicePackage, DpkgInstallsIntoAScratchRootAndTheInstalledDaemonRuns) {
  const std::string deb = built_deb();
  if (deb.empty()) GTEST_SKIP() << "no .deb in build-pkg/: run scripts/package.sh first";
  ScratchDir root("root");
  const std::string r = root.str();
  for (const char* d : {"/var/lib/dpkg/info", "/var/lib/dpkg/updates", "/var/lib/dpkg/triggers", "/bin", "/tmp"})
    std::filesystem::create_directories(r + d);
  write_file(r + "/var/lib/dpkg/status", "");
  write_file(r + "/var/lib/dpkg/available", "");
  // /bin/sh for the maintainer scripts: dash and what it links against.
  ASSERT_EQ(sh("cp /bin/dash " + r + "/bin/sh && for l in $(ldd /bin/dash | grep -o '/[^ ]*'); do "
               "mkdir -p " + r + "$(dirname $l) && cp -L $l " + r + "$l; done").exit_code,
            0);
  const Result install = run({"dpkg", "--root=" + r, "--force-depends", "--force-not-root", "-i", deb},
                             {{"PATH", "/usr/sbin:/usr/bin:/sbin:/bin"}});
  EXPECT_EQ(install.exit_code, 0) << install.out << install.err;
  EXPECT_TRUE(std::filesystem::exists(r + "/usr/sbin/ipsecov2d"));
  EXPECT_TRUE(std::filesystem::exists(r + "/usr/sbin/ipsecov2ctl"));
  EXPECT_TRUE(std::filesystem::exists(r + "/etc/ipsecov2/ipsecov2d.conf"));
  EXPECT_TRUE(std::filesystem::exists(r + "/lib/systemd/system/ipsecov2d.service") ||
              std::filesystem::exists(r + "/usr/lib/systemd/system/ipsecov2d.service"));
  const Result status = run({"dpkg", "--root=" + r, "-s", "ipsecov2"});
  EXPECT_THAT(status.out, HasSubstr("Status: install ok installed"));
  const Result conf = run({"dpkg-query", "--root=" + r, "-W", "-f=${Conffiles}", "ipsecov2"});
  EXPECT_THAT(conf.out, HasSubstr("/etc/ipsecov2/ipsecov2d.conf"));
  // The installed binary runs on this system (shared libraries resolve) and the shipped config parses.
  const Result help = run({r + "/usr/sbin/ipsecov2d", "--help"});
  EXPECT_EQ(help.exit_code, 0) << help.err;
  EXPECT_THAT(help.out, HasSubstr("--state-dir"));
  const Result remove = run({"dpkg", "--root=" + r, "--force-depends", "--force-not-root", "-r", "ipsecov2"});
  EXPECT_EQ(remove.exit_code, 0) << remove.out << remove.err;
  EXPECT_FALSE(std::filesystem::exists(r + "/usr/sbin/ipsecov2d"));
  EXPECT_TRUE(std::filesystem::exists(r + "/etc/ipsecov2/ipsecov2d.conf"));  // a conffile stays until purge
}

}  // namespace
