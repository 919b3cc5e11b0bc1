#pragma once
// The tokenizer files of a model directory made from scratch (`s0 init-model`): a byte-level
// BPE tokenizer.json without merges (every byte is one token, plus the family's special tokens)
// and the tokenizer_config.json that names the special tokens and carries the family's
// built-in chat template. Tokenizer::from_file reads them back; so does Hugging Face
// `tokenizers`. Torch-free.
#include <cstdint>
#include <string>

namespace s0::text {

// A byte-level BPE tokenizer.json with the 256 byte tokens at ids 0..255 (GPT-2 byte<->unicode
// mapping), no merges, NFC, the GPT-2 ByteLevel pre-tokenizer, and the ChatML special tokens at
// ids `first_special`, +1, +2 (<|endoftext|>, <|im_start|>, <|im_end|>).
std::string byte_level_tokenizer_json(int64_t first_special);

// Falcon-H1 style tokenizer.json: the 256 byte tokens from id 16, <|pad|> 0,
// <|begin_of_text|> 1, <|end_of_text|> 11, <|im_start|> 12, <|im_end|> 13; Llama-3 split
// regex, ignore_merges.
std::string falcon_h1_tokenizer_json();

// Writes DIR/tokenizer.json (byte_level_tokenizer_json(first_special)) and
// DIR/tokenizer_config.json: Qwen2Tokenizer, eos <|im_end|>, pad <|endoftext|>, no bos, the
// built-in "qwen3.5-small" chat template (thinking off unless asked for). Atomic writes;
// throws s0::Error naming the file on failure.
void write_qwen35_tokenizer(const std::string& dir, int64_t first_special, int64_t model_max_length);

// The same tokenizer files with the built-in "qwen2.5" chat template (the official Qwen2.5
// Instruct template: a default system prompt when none is given).
void write_qwen2_tokenizer(const std::string& dir, int64_t first_special, int64_t model_max_length);

// Writes DIR/tokenizer.json (falcon_h1_tokenizer_json()) and DIR/tokenizer_config.json:
// PreTrainedTokenizerFast, bos <|begin_of_text|>, eos <|end_of_text|>, pad <|pad|>, the
// built-in "falcon-h1" chat template.
void write_falcon_h1_tokenizer(const std::string& dir, int64_t model_max_length);

}  // namespace s0::text
