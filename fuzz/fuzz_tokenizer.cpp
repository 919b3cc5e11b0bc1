// tokenizer.json. First input byte picks the mode:
//   0x00-0xEF : encode + decode + pre_tokenize + streaming decode of the rest as text with one
//               of the shipped tokenizers (built-in, GPT-2 style, Llama-3 style and each of
//               its pre-tokenizer/normalizer variants, Qwen3); ids from the encoding, and the
//               rest read as raw ids (out-of-range included), are decoded
//   0xF0-0xFF : the rest is a tokenizer.json; load it, then encode/decode a fixed text with it
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "s0/text/tokenizer.h"

namespace {

std::vector<std::unique_ptr<s0::text::Tokenizer>> g_toks;

void exercise(const s0::text::Tokenizer& tok, std::string_view text, std::string_view raw_ids) {
  auto ids = tok.encode(text, true);
  auto ids2 = tok.encode(text, false);
  std::string back = tok.decode(ids);
  std::string back2 = tok.decode(ids2, true);
  (void)tok.pre_tokenize(text);
  (void)tok.normalize(text);
  // Raw ids (4 bytes each; negative and huge ids included).
  std::vector<int64_t> raw;
  for (size_t i = 0; i + 4 <= raw_ids.size() && raw.size() < 64; i += 4) {
    int32_t v;
    std::memcpy(&v, raw_ids.data() + i, 4);
    raw.push_back(v % 4 == 0 ? v : v % (tok.vocab_size() + 3));
  }
  std::string d = tok.decode(raw);
  s0::text::StreamDecoder sd(tok);
  std::string streamed;
  for (int64_t id : ids) streamed += sd.push(id);
  streamed += sd.flush();
  if (streamed != back) {
    std::fprintf(stderr, "tokenizer: streamed decode differs from decode\n");
    std::abort();
  }
  for (int64_t id : raw) (void)tok.token_bytes(id), (void)tok.id_to_token(id), (void)tok.is_special(id);
  (void)s0::text::utf8_repair(text);
  (void)s0::text::utf8_incomplete_suffix(text);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string d = S0_FUZZ_SOURCE_DIR;
  const char* files[] = {"/assets/builtin/model/tokenizer.json", "/tests/data/tokenizer/small_gpt2.json",
                         "/tests/data/tokenizer/small_llama3.json", "/tests/data/tokenizer/qwen3/tokenizer.json.gz"};
  for (const char* f : files) g_toks.push_back(std::make_unique<s0::text::Tokenizer>(s0::text::Tokenizer::from_file(d + f)));
  // small_llama3 with each normalizer / pre-tokenizer variant (as tests/text/test_tokenizer.cpp).
  std::ifstream base_in(d + "/tests/data/tokenizer/small_llama3.json"), var_in(d + "/tests/data/tokenizer/small_variants.json");
  const auto base = nlohmann::json::parse(base_in), variants = nlohmann::json::parse(var_in);
  for (const auto& v : variants) {
    auto j = base;
    j["normalizer"] = v["normalizer"];
    j["pre_tokenizer"] = v["pre_tokenizer"];
    g_toks.push_back(std::make_unique<s0::text::Tokenizer>(s0::text::Tokenizer::from_json(j.dump(), "variant")));
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int mode = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  s0::fuzz::expect_clean("tokenizer", [&] {
    if (mode < 0xF0) {
      const auto& tok = *g_toks[static_cast<size_t>(mode) % g_toks.size()];
      exercise(tok, rest, rest);
    } else {
      auto tok = s0::text::Tokenizer::from_json(std::string(rest), "fuzz tokenizer.json");
      exercise(tok, "Hello, world! 123 héllo\n\tdef f(x):\n  return x  <|im_end|>", rest.substr(0, 64));
    }
  });
  return 0;
}
