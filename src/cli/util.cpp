#include "commands.h"
#include "s0/util/error.h"

namespace s0::cli {

std::vector<int64_t> parse_id_list(const std::string& s, const std::string& flag) {
  std::vector<int64_t> ids;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    const std::string tok = s.substr(pos, end - pos);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(tok, &used);
    } catch (...) {
      used = 0;
    }
    if (used == 0 || used != tok.size())
      throw Error(flag + ": '" + tok + "' is not an integer (expected e.g. 1,2,3)");
    ids.push_back(v);
    pos = end + 1;
  }
  if (ids.empty()) throw Error(flag + ": empty list");
  return ids;
}

}  // namespace s0::cli
