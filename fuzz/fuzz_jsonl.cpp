// Training JSONL, all three forms ({"prompt","completion"} raw, the same through the chat
// template, {"messages": [...]}) with the built-in model's tokenizer and chat template.
// First input byte: bit 0 = chat mode, bits 1-3 pick --max-length; the rest is the file.
#include <cstdint>
#include <memory>
#include <string>

#include "fuzz_util.h"
#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"
#include "s0/train/data.h"

namespace {
std::unique_ptr<s0::text::Tokenizer> g_tok;
std::unique_ptr<s0::text::ChatTemplate> g_chat;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string dir = std::string(S0_FUZZ_SOURCE_DIR) + "/assets/builtin/model";
  g_tok = std::make_unique<s0::text::Tokenizer>(s0::text::Tokenizer::from_model_dir(dir));
  g_chat = std::make_unique<s0::text::ChatTemplate>(s0::text::ChatTemplate::from_model_dir(dir));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool chat = data[0] & 1;
  s0::train::DataOptions opt;
  const int64_t lengths[] = {2048, 2, 3, 8, 64, 1, 0, -5};
  opt.max_length = lengths[(data[0] >> 1) & 7];
  const std::string path = s0::fuzz::write_file(
      "train.jsonl", std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  s0::fuzz::expect_clean("jsonl", [&] {
    auto d = s0::train::load_jsonl(path, *g_tok, chat ? g_chat.get() : nullptr, opt);
    for (const auto& ex : d.examples) {
      if (ex.ids.size() != ex.target.size() || static_cast<int64_t>(ex.ids.size()) > opt.max_length ||
          ex.num_targets() == 0) {
        std::fprintf(stderr, "jsonl: inconsistent example\n");
        std::abort();
      }
    }
  });
  return 0;
}
