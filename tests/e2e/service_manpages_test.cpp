// The man pages in man/ cannot drift from the programs: every option that
// `ipsecov2d --help` and every `ipsecov2ctl [command...] --help` lists is in
// the page, every command has its section, every key of the shipped
// configuration file is in ipsecov2d.conf(5), and man renders each page
// without a warning.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <regex>
#include <set>

#include "e2e/service_harness.h"

namespace {

using namespace ov2svc;

const std::string kManDir = OV2_SOURCE_DIR "/man/";

// The long options and the subcommands a CLI11 help text lists.
struct HelpText {
  std::set<std::string> options;      // "--wire"
  std::vector<std::string> commands;  // "add"
};

HelpText parse_help(const std::string& help) {
  HelpText h;
  static const std::regex option(R"(^  (?:-[a-zA-Z],)?(--[a-z][a-z0-9-]*))");
  static const std::regex command(R"(^  ([a-z][a-z0-9-]*)  )");
  bool in_commands = false;
  std::istringstream lines(help);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("Subcommands:", 0) == 0) in_commands = true;
    else if (!line.empty() && line[0] != ' ') in_commands = false;
    std::smatch m;
    if (std::regex_search(line, m, option)) h.options.insert(m[1]);
    else if (in_commands && std::regex_search(line, m, command)) h.commands.push_back(m[1]);
  }
  return h;
}

// "--no-restore" as roff writes it: \-\-no\-restore.
std::string roff(const std::string& s) {
  std::string r;
  for (char c : s) r += c == '-' ? std::string("\\-") : std::string(1, c);
  return r;
}

TEST(ManPages, HelpParserFindsOptionsAndCommands) {
  const HelpText h = parse_help(
      "Options:\n  -h,--help   help\n  --socket TEXT=/x\n                              long\n"
      "Subcommands:\n  caps                        show\n  sa                          SAs\n");
  EXPECT_EQ(h.options, (std::set<std::string>{"--help", "--socket"}));
  EXPECT_EQ(h.commands, (std::vector<std::string>{"caps", "sa"}));
}

TEST(ManPages, EveryDaemonOptionIsInIpsecov2d8) {
  const std::string page = read_file(kManDir + "ipsecov2d.8");
  const Result help = run({kDaemon, "--help"});
  ASSERT_EQ(help.exit_code, 0) << help.err;
  const HelpText h = parse_help(help.out);
  ASSERT_GE(h.options.size(), 10U) << help.out;  // the parser sees them all
  for (const auto& o : h.options) EXPECT_NE(page.find(roff(o)), std::string::npos) << o << " is not in ipsecov2d.8";
}

TEST(ManPages, EveryCliCommandAndOptionIsInIpsecov2ctl8) {
  const std::string page = read_file(kManDir + "ipsecov2ctl.8");
  size_t commands = 0, options = 0;
  // Breadth-first over the command tree: {} -> {sa} -> {sa, add} ...
  std::vector<std::vector<std::string>> todo = {{}};
  while (!todo.empty()) {
    const std::vector<std::string> path = todo.back();
    todo.pop_back();
    std::vector<std::string> argv = {kCtl};
    argv.insert(argv.end(), path.begin(), path.end());
    argv.emplace_back("--help");
    const Result help = run(argv);
    ASSERT_EQ(help.exit_code, 0) << help.err;
    const HelpText h = parse_help(help.out);
    std::string name;
    for (const auto& p : path) name += (name.empty() ? "" : " ") + p;
    for (const auto& o : h.options) {
      ++options;
      EXPECT_NE(page.find(roff(o)), std::string::npos) << "ipsecov2ctl " << name << " " << o << " is not in ipsecov2ctl.8";
    }
    // A leaf command has its own section (.SS caps, .SS sa add ...).
    if (h.commands.empty() && !path.empty()) {
      ++commands;
      EXPECT_NE(page.find("\n.SS " + name), std::string::npos) << "ipsecov2ctl " << name << " has no section";
    }
    for (const auto& c : h.commands) {
      std::vector<std::string> sub = path;
      sub.push_back(c);
      todo.push_back(sub);
    }
  }
  EXPECT_GE(commands, 13U);  // caps, 5 sa, 3 policy, stats, monitor, 2 pcap
  EXPECT_GE(options, 40U);
}

TEST(ManPages, EveryShippedConfigKeyIsInIpsecov2dConf5) {
  const std::string page = read_file(kManDir + "ipsecov2d.conf.5");
  std::istringstream lines(read_file(OV2_SOURCE_DIR "/ctl/config/ipsecov2d.conf"));
  static const std::regex section(R"(^\[([a-z_]+)\]$)");
  static const std::regex key(R"(^([a-z_]+) = )");
  size_t keys = 0;
  size_t at = 0;  // keys must come under their own section, in order
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (std::regex_search(line, m, section)) {
      at = page.find("\n.SS [" + m[1].str() + "]\n");
      EXPECT_NE(at, std::string::npos) << "section [" << m[1] << "] is not in ipsecov2d.conf.5";
    } else if (std::regex_search(line, m, key)) {
      ++keys;
      const size_t next = page.find("\n.SS ", at == std::string::npos ? 0 : at + 1);
      const size_t found = page.find(" " + m[1].str() + " \" = \"", at == std::string::npos ? 0 : at);
      EXPECT_TRUE(at != std::string::npos && found != std::string::npos && found < next)
          << "key " << m[1] << " is not in its section of ipsecov2d.conf.5";
    }
  }
  EXPECT_GE(keys, 20U);
}

Result render(const std::string& file) {
  return run({"man", "--warnings", "-l", file}, {{"MANWIDTH", "80"}, {"MAN_KEEP_FORMATTING", "0"}});
}

TEST(ManPages, EveryPageRendersWithoutAWarning) {
  for (const char* page : {"ipsecov2d.8", "ipsecov2ctl.8", "ipsecov2d.conf.5"}) {
    const Result r = render(kManDir + page);
    EXPECT_EQ(r.exit_code, 0) << page << ": " << r.err;
    EXPECT_EQ(r.err, "") << page;
    EXPECT_GT(r.out.size(), 1000U) << page;
  }
}

TEST(ManPages, ABrokenPageDoesWarnSoTheCheckAboveCanFail) {
  const std::string file = "/tmp/ov2man" + std::to_string(getpid()) + ".8";
  write_file(file, ".TH X 8\n.SH NAME\nx\n.no_such_macro\n");
  const Result r = render(file);
  std::filesystem::remove(file);
  EXPECT_THAT(r.err, ::testing::HasSubstr("warning"));
}

}  // namespace
