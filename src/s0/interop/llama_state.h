#pragma once
// Export of S0 initial states to llama.cpp: a sequence-state file ("ggsq", the format of
// llama_state_seq_save_file / llama_state_seq_load_file and of llama-server's slot
// save/restore) whose recurrent part holds the learned states, so that a llama.cpp user
// starts a sequence from them with no code change. Torch-free.
//
// Target: ggml-org/llama.cpp as of Qwen3.5 support (PR #19435, Feb 2026). The byte layout was
// learnt by reading, in the JohannesGaessler/llama.cpp fork (a core maintainer's, kept close
// to upstream), src/llama-context.cpp @ 0ead3063ef5ae5ea09af1e31a7763d58b418726f
// (state_seq_save_file / state_seq_load_file / state_seq_write_data),
// src/llama-memory-hybrid.cpp @ b1d54974722f8a0a1cb6317b84dc47340378d1cd (attention part,
// then recurrent part), src/llama-memory-recurrent.cpp @ 5841f4091985f8d85ed44ee8657f7cc9bf73e04e
// (state_write / state_read_meta / state_read_data / find_slot),
// src/llama-kv-cache.cpp @ 16ed065bc338d6f84590e8d29b3b67a5fe0f7139 (state_write, the
// per-stream cell counts) and src/models/qwen35.cpp @ 5dabcc97050a1312a5822e90acb2e024847310d0
// (r/s shapes); include/llama.h (LLAMA_STATE_SEQ_MAGIC 'ggsq' = 0x67677371, VERSION 2);
// src/llama-hparams.cpp (n_embd_r, n_embd_s) and src/llama-model.cpp (GGML_TYPE_F32 r/s
// rows; Falcon-H1: every layer is both attention and recurrent; Qwen3.5: layer i is
// recurrent iff (i + 1) % full_attention_interval != 0); ggml-org/llama.cpp
// conversion/qwen.py @ 03173d5e78f8ccd7ccbb385f1f7b4a21266377dc (_LinearAttentionVReorderBase:
// value heads grouped -> tiled). Recent recurrent-memory versions (ggml-org index,
// 0054ee8ca80bb64d4a56eec854f2753cab5b51be) write the same bytes for these models.
//
// The file (every integer little-endian):
//   u32 magic 0x67677371, u32 version 2, u32 n_token_count = 0 (no tokens follow)
//   attention part (llama_kv_cache::state_write): u32 n_stream, then n_stream x u32 cell
//     count 0 (an empty stream carries nothing else)
//   recurrent part (llama_memory_recurrent::state_write): u32 cell_count 1;
//     the cell: i32 pos = -1, u32 n_seq_id = 0 (a single-sequence file names no sequence);
//     u32 s_trans 0, u32 n_layer (hparams.n_layer);
//     for each recurrent layer, ascending: i32 type 0 (F32), u64 row bytes 4 * n_embd_r,
//       n_embd_r float32 zeros (the conv state: S0 learns none);
//     for each recurrent layer, ascending: i32 type 0 (F32), u64 row bytes 4 * n_embd_s,
//       the state, n_embd_s float32 in llama.cpp's order:
//       Qwen3.5 (n_embd_s = Hv * dk * dv): head-major, each head [V][K] (the transpose of the
//         Hugging Face [K][V]), heads in llama.cpp's tiled order: llama head j * Hk + g is
//         Hugging Face head g * (Hv / Hk) + j;
//       Falcon-H1 (n_embd_s = H * P * N): the Hugging Face [H, P, N] memory order verbatim.
//   n_embd_r = (Kc - 1) * conv channels (Qwen3.5: 2 Hk dk + Hv dv; Falcon-H1: d_ssm + 2 G N).
//
// Why pos -1: llama.cpp keeps a restored cell's state (state_read_meta sets its src to
// itself, so find_slot copies it rather than zeroing it) whatever its pos; pos -1 makes the
// sequence look empty (seq_pos_max -1, together with the empty attention part), so the prompt
// is decoded from position 0 exactly as for a fresh sequence, without the "non-consecutive
// token position" warning, and seq_rm(seq, 0, -1) (what llama-server does before reusing a
// slot's zero cached tokens) leaves the cell alone. The state is used by the first decode
// after loading; loading again restarts the next sequence from it. Load into an empty
// sequence: llama_kv_cache::state_read skips an empty stream without removing the
// sequence's old KV cells.
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace s0::interop {

inline constexpr uint32_t kLlamaStateSeqMagic = 0x67677371u;  // 'ggsq'
inline constexpr uint32_t kLlamaStateSeqVersion = 2;

// What llama.cpp's memory holds for one model: the part of it a sequence-state file carries.
struct LlamaStateLayout {
  std::string arch;                       // llama.cpp architecture: "qwen35" | "falcon-h1"
  std::string state_arch;                 // s0's: "gated_delta_net" | "mamba2"
  uint32_t n_layer = 0;                   // llama.cpp's hparams.n_layer (the GGUF's block count)
  std::vector<int64_t> recurrent_layers;  // layers with r/s rows, ascending
  std::vector<int64_t> state_shape;       // s0 layout per layer: [Hv, dk, dv] | [H, P, N]
  int64_t key_heads = 0;                  // Qwen3.5: Hk (value heads are tiled over them)
  uint64_t n_embd_r = 0;                  // conv-state floats per cell and layer
  uint64_t n_embd_s = 0;                  // recurrent-state floats per cell and layer
};

// The layout for a model's config.json (`source` names it in errors). `extra_layers`: layers
// the GGUF has after the model's own (a Qwen3.5 GGUF converted with its MTP block has one;
// they are attention layers, so only n_layer changes). s0::Error for a model type llama.cpp
// export does not cover (only qwen3_5 / qwen3_5_text and falcon_h1) and for shapes llama.cpp
// cannot represent (Qwen3.5: key head dim != value head dim, Hv not a multiple of Hk,
// layer_types not following full_attention_interval).
LlamaStateLayout llama_state_layout(const nlohmann::json& config, const std::string& source,
                                    uint32_t extra_layers = 0);
// The same for DIR/config.json.
LlamaStateLayout llama_state_layout_for_model(const std::string& model_dir, uint32_t extra_layers = 0);

// One layer's state in s0's layout (row-major float32, prod(state_shape) values) as llama.cpp's
// s row (n_embd_s values).
std::vector<float> to_llama_state_row(const LlamaStateLayout& layout, const std::vector<float>& s0_state);

struct LlamaStateSeqOptions {
  // Streams of the attention KV cache in the context that loads the file: 1 when it has one
  // sequence (llama-cli, llama-completion) or a unified KV cache (--kv-unified; llama-server's
  // default when --parallel is automatic), else its n_seq_max. llama.cpp refuses a mismatch.
  uint32_t n_stream = 1;
};

// Streams the file to `sink`. `states`: per recurrent layer (the model's layer index), the
// state to start from in s0's layout (already scaled: what s0 injects); a recurrent layer
// without an entry starts from zeros. s0::Error when a key is not a recurrent layer of the
// layout or a state has the wrong number of values.
void write_llama_state_seq(const LlamaStateLayout& layout, const std::map<int64_t, std::vector<float>>& states,
                           const LlamaStateSeqOptions& opt,
                           const std::function<void(const void*, size_t)>& sink);
// The file's bytes.
std::string llama_state_seq_bytes(const LlamaStateLayout& layout, const std::map<int64_t, std::vector<float>>& states,
                                  const LlamaStateSeqOptions& opt = {});
// Writes the file atomically (temp file + rename); returns its size in bytes.
uint64_t save_llama_state_seq(const std::string& path, const LlamaStateLayout& layout,
                              const std::map<int64_t, std::vector<float>>& states,
                              const LlamaStateSeqOptions& opt = {});

}  // namespace s0::interop
