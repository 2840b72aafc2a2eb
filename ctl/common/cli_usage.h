// One wording for command-line usage errors of ipsecov2ctl and ipsecov2d.
#pragma once

#include <CLI/CLI.hpp>
#include <algorithm>
#include <string>
#include <vector>

namespace ov2 {

// CLI11 checks required options and subcommands before it complains about
// arguments it could not place, so `ipsecov2ctl status` would be answered
// "A subcommand is required". Name the first unplaced argument instead (it is
// what the user got wrong), and list the commands where one is missing.
inline std::string cli_usage_error(const CLI::App& app, const CLI::ParseError& e) {
  const CLI::App* deepest = &app;
  std::string path;
  for (;;) {
    const auto parsed = deepest->get_subcommands();
    if (parsed.empty()) break;
    deepest = parsed.front();
    path += (path.empty() ? "" : " ") + deepest->get_name();
  }
  std::string commands;
  for (const CLI::App* sub : deepest->get_subcommands([](const CLI::App* s) { return !s->get_name().empty(); }))
    commands += (commands.empty() ? "" : ", ") + sub->get_name();
  const std::string where = path.empty() ? std::string{} : " for '" + path + "'";
  const std::vector<std::string> left = deepest->remaining();
  if (left.empty()) {
    if (!commands.empty() && dynamic_cast<const CLI::RequiredError*>(&e) != nullptr &&
        std::string(e.what()).find("ubcommand") != std::string::npos)
      return (path.empty() ? std::string("a command is missing") : "'" + path + "' needs a command") + " (one of: " +
             commands + ")";
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    return what;
  }
  const std::string& arg = left.front();
  if (arg.size() > 1 && arg[0] == '-') return "unknown option " + arg + where;
  if (commands.empty()) return "unexpected argument '" + arg + "'" + where;
  return "unknown command '" + arg + "'" + where + " (one of: " + commands + ")";
}

}  // namespace ov2
