#pragma once
// Hugging Face `tokenizer.json` (byte-level BPE: Qwen2/2.5/3/3.5, Llama-3-style as used by
// Falcon-H1, GPT-2) reproduced exactly: every id equals what the `tokenizers` library gives.
// Torch-free.
//
// Supported components (anything else is an s0::Error naming the file and the component):
//   model          BPE (vocab; merges as "a b" strings or ["a","b"] pairs; ignore_merges;
//                  unk_token/fuse_unk; no dropout, no subword prefix/suffix, no byte_fallback)
//   normalizer     null, NFC/NFD/NFKC/NFKD, Sequence of those
//   pre_tokenizer  null, Split (Regex or String pattern; behaviours Isolated, Removed,
//                  MergedWithPrevious, MergedWithNext, Contiguous; not inverted), ByteLevel
//                  (add_prefix_space, use_regex = the GPT-2 regex), Sequence of those
//   post_processor null, ByteLevel (adds nothing), TemplateProcessing (single template),
//                  Sequence of those
//   decoder        null (tokens joined by " "), ByteLevel, Sequence of those
//   added_tokens   special and non-special; lstrip/rstrip/single_word/normalized as the
//                  tokenizers library defines them (leftmost-longest match on the raw text for
//                  normalized:false tokens, on the normalized segments for normalized:true)
//
// Added-token ids are assigned as tokenizers does when it loads the file: a token whose content
// is in the model vocab gets that id, any other the next id after max(vocab entries - 1, added
// ids so far); the "id" fields are not trusted (tokenizers only warns when they differ). For
// files tokenizers wrote itself both agree.
//
// Split regexes run on ICU (Unicode 15; Oniguruma in `tokenizers` has Unicode 16 tables, so
// the ~5,000 letters added in Unicode 15.1/16 classify differently), except the exact
// Qwen2/2.5/3, Qwen3.5 and Llama-3 (Falcon-H1) patterns, which run on an equivalent
// hand-written matcher (same ICU character classes; ~3x faster; S0_TOKENIZER_ICU_ONLY=1 turns
// it off). NFC is ICU's Normalizer2 (Unicode 15; tokenizers' older tables do not compose
// U+11935 U+11930, ICU does).
//
// Encoding is thread-safe (a shared BPE cache of up to 200,000 pieces behind a shared_mutex).
//
// Invalid UTF-8 in encode() input: every maximal invalid subsequence is replaced by U+FFFD
// (the "substitution of maximal subparts" practice, as Rust's String::from_utf8_lossy and
// WHATWG TextDecoder do) before anything else; the rest of the pipeline then sees the
// repaired text. decode() maps token bytes the same way.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace s0::text {

struct TokenizerImpl;

class Tokenizer {
 public:
  // Reads a tokenizer.json (a gzip-compressed file is accepted too).
  static Tokenizer from_file(const std::string& tokenizer_json);
  // DIR/tokenizer.json.
  static Tokenizer from_model_dir(const std::string& dir);
  // From the JSON text itself; `origin` names it in error messages.
  static Tokenizer from_json(const std::string& json_text, const std::string& origin = "<json>");

  std::vector<int64_t> encode(std::string_view text, bool add_special_tokens = true) const;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;
  int64_t token_to_id(std::string_view token) const;  // -1 if absent
  std::string id_to_token(int64_t id) const;          // "" if absent
  bool is_special(int64_t id) const;
  int64_t vocab_size() const;  // highest id + 1 over vocab and added tokens

  // Normalizer + pre-tokenizer only (no added-token split): the pieces the BPE model sees,
  // in their byte-level form (like tokenizers' pre_tokenize_str on the normalized text).
  std::vector<std::string> pre_tokenize(std::string_view text) const;
  // The normalizer alone (after the invalid-UTF-8 repair).
  std::string normalize(std::string_view text) const;

  // The bytes one token decodes to on its own (before UTF-8 repair); special tokens included.
  // Used by StreamDecoder.
  std::string token_bytes(int64_t id) const;
  bool has_byte_level_decoder() const;

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

 private:
  explicit Tokenizer(std::unique_ptr<TokenizerImpl> impl);
  std::unique_ptr<TokenizerImpl> impl_;
};

// Incremental detokenization for generation: push() returns only text made of complete UTF-8
// characters; a trailing sequence that may still become a valid character is held back.
// The concatenation of every push() and the final flush() equals decode(all ids).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& t, bool skip_special_tokens = false);
  std::string push(int64_t id);  // newly completed text (maybe empty)
  std::string flush();           // whatever remains (invalid bytes -> U+FFFD)

 private:
  const Tokenizer* tok_;
  bool skip_special_;
  bool first_ = true;
  std::string pending_;  // bytes not yet emitted
};

// UTF-8 repair: each maximal invalid subsequence becomes U+FFFD (as String::from_utf8_lossy).
std::string utf8_repair(std::string_view bytes);
// Length of the longest suffix of `bytes` that is an incomplete but still possibly valid
// UTF-8 sequence (0..3).
size_t utf8_incomplete_suffix(std::string_view bytes);

}  // namespace s0::text
