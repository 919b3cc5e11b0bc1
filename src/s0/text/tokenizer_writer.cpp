#include "s0/text/tokenizer_writer.h"

#include <cstdint>
#include <utility>

#include <nlohmann/json.hpp>

#include "s0/io/atomic_file.h"
#include "s0/text/chat_template.h"

namespace s0::text {

using nlohmann::json;

namespace {

// The 256 byte tokens (GPT-2 byte <-> unicode mapping: printable bytes map to themselves,
// the rest to U+0100+) at ids offset .. offset + 255.
json byte_vocab(int64_t offset) {
  json vocab = json::object();
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    uint32_t cp = printable ? b : 256 + extra++;
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    vocab[s] = offset + b;
  }
  return vocab;
}

}  // namespace

std::string byte_level_tokenizer_json(int64_t first_special) {
  // GPT-2 byte <-> unicode mapping: printable bytes map to themselves, the rest to U+0100+.
  json vocab = byte_vocab(0);
  json added = json::array();
  const char* specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  for (int i = 0; i < 3; ++i)
    added.push_back({{"id", first_special + i}, {"content", specials[i]}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}});
  json tok = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", true}}},
      {"post_processor",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}},
      {"decoder",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
        {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""},
        {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
        {"vocab", vocab}, {"merges", json::array()}}}};
  return tok.dump(1);
}

std::string falcon_h1_tokenizer_json() {
  // Special tokens at the Falcon-H1 ids of config.json (pad 0, bos 1, eos 11), the ChatML
  // markers at 12 and 13 (their real ids are UNVERIFIED), bytes from id 16. Pre-tokenizer:
  // the Llama-3 split regex, then ByteLevel without its own regex; ignore_merges on
  // (shared spec falcon_h1.md section 5).
  json added = json::array();
  const std::pair<int64_t, const char*> specials[] = {{0, "<|pad|>"},
                                                     {1, "<|begin_of_text|>"},
                                                     {11, "<|end_of_text|>"},
                                                     {12, "<|im_start|>"},
                                                     {13, "<|im_end|>"}};
  json vocab = byte_vocab(16);
  for (const auto& [id, content] : specials) {
    added.push_back({{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
    vocab[content] = id;
  }
  const char* llama3_regex =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
      "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}};
  json tok = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", llama3_regex}}}, {"behavior", "Isolated"}, {"invert", false}},
          byte_level}}}},
      {"post_processor", byte_level},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
        {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", true},
        {"vocab", vocab}, {"merges", json::array()}}}};
  return tok.dump(1);
}

namespace {

// tokenizer.json (byte_level_tokenizer_json) and a Qwen2Tokenizer config carrying the
// built-in chat template `chat_template`.
void write_chatml_tokenizer(const std::string& dir, int64_t first_special, int64_t model_max_length,
                            const char* chat_template) {
  io::write_file_atomic(dir + "/tokenizer.json", byte_level_tokenizer_json(first_special));
  json tcfg = {{"tokenizer_class", "Qwen2Tokenizer"},
               {"eos_token", "<|im_end|>"},
               {"pad_token", "<|endoftext|>"},
               {"bos_token", nullptr},
               {"chat_template", ChatTemplate::builtin(chat_template).source()},
               {"model_max_length", model_max_length}};
  io::write_file_atomic(dir + "/tokenizer_config.json", tcfg.dump(2));
}

}  // namespace

void write_qwen35_tokenizer(const std::string& dir, int64_t first_special, int64_t model_max_length) {
  // The Qwen3.5 small-model template (thinking off unless asked for).
  write_chatml_tokenizer(dir, first_special, model_max_length, "qwen3.5-small");
}

void write_qwen2_tokenizer(const std::string& dir, int64_t first_special, int64_t model_max_length) {
  write_chatml_tokenizer(dir, first_special, model_max_length, "qwen2.5");
}

void write_falcon_h1_tokenizer(const std::string& dir, int64_t model_max_length) {
  io::write_file_atomic(dir + "/tokenizer.json", falcon_h1_tokenizer_json());
  json tcfg = {{"tokenizer_class", "PreTrainedTokenizerFast"},
               {"bos_token", "<|begin_of_text|>"},
               {"eos_token", "<|end_of_text|>"},
               {"pad_token", "<|pad|>"},
               {"chat_template", ChatTemplate::builtin("falcon-h1").source()},
               {"model_max_length", model_max_length}};
  io::write_file_atomic(dir + "/tokenizer_config.json", tcfg.dump(2));
}

}  // namespace s0::text
