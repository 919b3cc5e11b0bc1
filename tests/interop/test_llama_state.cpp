// llama.cpp sequence-state export: the bytes against an expected file built here from the
// layout description (byte by byte, no code shared with the writer), the value-head order of
// models with more value than key heads, untrained layers, the context options, the
// refusals, and `s0 states export` end to end against tools/llama_state_expected.py (an
// independent Python builder).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "s0/adapters/state_set.h"
#include "s0/interop/llama_state.h"
#include "s0/io/atomic_file.h"
#include "s0/models/falcon_h1_config.h"
#include "s0/models/qwen2_config.h"
#include "s0/models/qwen35_config.h"
#include "s0/util/error.h"
#include "test_util.h"

using namespace s0;
namespace fs = std::filesystem;
using nlohmann::json;
using States = std::map<int64_t, std::vector<float>>;

namespace {

json qwen_tiny() { return models::Qwen35Config::preset("tiny").to_json(); }  // Hk 2, Hv 4, dk = dv = 16
json falcon_tiny() { return models::FalconH1Config::preset("tiny").to_json(); }  // H 4, P 16, N 8, G 2

std::vector<float> random_values(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> d(-1000, 1000);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(d(gen)) / 64.0f;  // exact in float32
  return v;
}

// ---- the expected file, written from the layout description (see llama_state.h / README) ----

struct Bytes {
  std::string b;
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) b.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void i32(int32_t v) { u32(static_cast<uint32_t>(v)); }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) b.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void f32(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u32(u);
  }
};

// The model as the expected builder sees it: a few numbers from the config, nothing else.
struct Expect {
  bool gdn = true;
  int64_t n_layer = 0;
  std::vector<int64_t> layers;
  int64_t hk = 0, hv = 0, dk = 0, dv = 0;  // GatedDeltaNet
  int64_t H = 0, P = 0, N = 0;             // Mamba-2
  int64_t n_r = 0, n_s = 0;
};

Expect expect_qwen(const json& cfg) {
  const json& t = cfg.contains("text_config") ? cfg["text_config"] : cfg;
  Expect e;
  e.gdn = true;
  e.n_layer = t["num_hidden_layers"];
  for (int64_t i = 0; i < e.n_layer; ++i)
    if (t["layer_types"][i] == "linear_attention") e.layers.push_back(i);
  e.hk = t["linear_num_key_heads"], e.hv = t["linear_num_value_heads"];
  e.dk = t["linear_key_head_dim"], e.dv = t["linear_value_head_dim"];
  const int64_t kc = t["linear_conv_kernel_dim"];
  e.n_r = (kc - 1) * (2 * e.hk * e.dk + e.hv * e.dv);
  e.n_s = e.hv * e.dk * e.dv;
  return e;
}

Expect expect_falcon(const json& cfg) {
  Expect e;
  e.gdn = false;
  e.n_layer = cfg["num_hidden_layers"];
  for (int64_t i = 0; i < e.n_layer; ++i) e.layers.push_back(i);
  e.H = cfg["mamba_n_heads"], e.P = cfg["mamba_d_head"], e.N = cfg["mamba_d_state"];
  const int64_t d_ssm = cfg["mamba_d_ssm"], g = cfg["mamba_n_groups"], kc = cfg["mamba_d_conv"];
  e.n_r = (kc - 1) * (d_ssm + 2 * g * e.N);
  e.n_s = e.N * d_ssm;
  return e;
}

// The value llama.cpp's s row holds at index `idx` for an s0-layout state `s`.
float llama_value(const Expect& e, const std::vector<float>& s, int64_t idx) {
  if (!e.gdn) return s[idx];  // [H][P][N] both sides
  const int64_t per_head = e.dk * e.dv;
  const int64_t m = idx / per_head, within = idx % per_head;
  const int64_t value_row = within / e.dk, key_col = within % e.dk;  // llama head: [V][K]
  const int64_t j = m / e.hk, g = m % e.hk;                          // tiled: m = j*Hk + g
  const int64_t h = g * (e.hv / e.hk) + j;                           // grouped HF head
  return s[h * per_head + key_col * e.dv + value_row];               // HF head: [K][V]
}

std::string expected_file(const Expect& e, const States& st, uint32_t n_stream = 1, int64_t extra = 0) {
  Bytes o;
  o.u32(0x67677371u);
  o.u32(2);
  o.u32(0);
  o.u32(n_stream);
  for (uint32_t s = 0; s < n_stream; ++s) o.u32(0);
  o.u32(1);
  o.i32(-1);
  o.u32(0);
  o.u32(0);
  o.u32(static_cast<uint32_t>(e.n_layer + extra));
  for (size_t i = 0; i < e.layers.size(); ++i) {
    o.i32(0);
    o.u64(4 * e.n_r);
    for (int64_t k = 0; k < e.n_r; ++k) o.f32(0.0f);
  }
  for (int64_t l : e.layers) {
    o.i32(0);
    o.u64(4 * e.n_s);
    auto it = st.find(l);
    for (int64_t k = 0; k < e.n_s; ++k) o.f32(it == st.end() ? 0.0f : llama_value(e, it->second, k));
  }
  return o.b;
}

void expect_error(const std::function<void()>& f, std::initializer_list<std::string> parts) {
  try {
    f();
    FAIL() << "expected an s0::Error";
  } catch (const Error& err) {
    for (const auto& p : parts) EXPECT_NE(std::string(err.what()).find(p), std::string::npos) << err.what();
  }
}

float float_at(const std::string& b, size_t off) {
  float f;
  std::memcpy(&f, b.data() + off, 4);
  return f;
}

}  // namespace

TEST(LlamaState, QwenLayoutFromConfig) {
  const auto l = interop::llama_state_layout(qwen_tiny(), "cfg");
  EXPECT_EQ(l.arch, "qwen35");
  EXPECT_EQ(l.state_arch, "gated_delta_net");
  EXPECT_EQ(l.n_layer, 4u);
  EXPECT_EQ(l.recurrent_layers, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(l.state_shape, (std::vector<int64_t>{4, 16, 16}));
  EXPECT_EQ(l.n_embd_r, 3u * (2 * 2 * 16 + 4 * 16));  // (Kc-1) * conv channels
  EXPECT_EQ(l.n_embd_s, 4u * 16 * 16);
}

TEST(LlamaState, QwenBytesMatchIndependentBuilder) {
  const json cfg = qwen_tiny();
  const auto layout = interop::llama_state_layout(cfg, "cfg");
  States st;
  for (int64_t l : {0, 1, 2}) st[l] = random_values(4 * 16 * 16, 10 + l);
  const std::string got = interop::llama_state_seq_bytes(layout, st);
  const std::string want = expected_file(expect_qwen(cfg), st);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want);
  // 12 header bytes, 8 attention bytes, 4 + 8 cell bytes, 8 s_trans/n_layer bytes, then the rows.
  EXPECT_EQ(got.size(), 12u + 8 + 12 + 8 + 3 * (12 + 4 * 3 * 128) + 3 * (12 + 4 * 1024));
  EXPECT_EQ(got.substr(0, 4), std::string("qsgg"));  // 0x67677371 little-endian
}

TEST(LlamaState, QwenValueHeadsAreTiledAndTransposed) {
  // Hv = 4 = 2 Hk: Hugging Face heads are grouped by key head (g0: h0 h1, g1: h2 h3); llama.cpp
  // tiles them (m = j*Hk + g): llama order h0 h2 h1 h3. Each head [K][V] becomes [V][K].
  const auto layout = interop::llama_state_layout(qwen_tiny(), "cfg");
  std::vector<float> s(4 * 16 * 16, 0.0f);
  s[1 * 256 + 3 * 16 + 5] = 7.0f;  // HF head 1 (g 0, j 1), key 3, value 5
  s[2 * 256 + 0 * 16 + 1] = 9.0f;  // HF head 2 (g 1, j 0), key 0, value 1
  const auto row = interop::to_llama_state_row(layout, s);
  ASSERT_EQ(row.size(), 1024u);
  EXPECT_EQ(row[2 * 256 + 5 * 16 + 3], 7.0f);  // llama head 1*2 + 0 = 2, value row 5, key 3
  EXPECT_EQ(row[1 * 256 + 1 * 16 + 0], 9.0f);  // llama head 0*2 + 1 = 1, value row 1, key 0
  float sum = 0;
  for (float v : row) sum += v;
  EXPECT_EQ(sum, 16.0f);
  // With as many value as key heads only the per-head transpose remains.
  json eq = qwen_tiny();
  eq["text_config"]["linear_num_value_heads"] = 2;
  const auto l2 = interop::llama_state_layout(eq, "cfg");
  std::vector<float> s2(2 * 256, 0.0f);
  s2[1 * 256 + 3 * 16 + 5] = 7.0f;
  EXPECT_EQ(interop::to_llama_state_row(l2, s2)[1 * 256 + 5 * 16 + 3], 7.0f);
}

TEST(LlamaState, FalconBytesMatchIndependentBuilder) {
  const json cfg = falcon_tiny();
  const auto layout = interop::llama_state_layout(cfg, "cfg");
  EXPECT_EQ(layout.arch, "falcon-h1");
  EXPECT_EQ(layout.recurrent_layers, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(layout.state_shape, (std::vector<int64_t>{4, 16, 8}));
  EXPECT_EQ(layout.n_embd_r, 3u * (64 + 2 * 2 * 8));
  EXPECT_EQ(layout.n_embd_s, 8u * 64);
  States st;
  for (int64_t l : {0, 1, 2}) st[l] = random_values(4 * 16 * 8, 20 + l);
  const std::string got = interop::llama_state_seq_bytes(layout, st);
  EXPECT_TRUE(got == expected_file(expect_falcon(cfg), st));
  // The last layer's state is the file's tail, verbatim.
  const size_t tail = got.size() - 4 * 512;
  for (int k : {0, 1, 77, 511}) EXPECT_EQ(float_at(got, tail + 4 * k), st[2][k]);
}

TEST(LlamaState, UntrainedLayersAreZeros) {
  const json q = qwen_tiny();
  const auto ql = interop::llama_state_layout(q, "cfg");
  States only1{{1, random_values(1024, 5)}};
  const std::string qb = interop::llama_state_seq_bytes(ql, only1);
  EXPECT_TRUE(qb == expected_file(expect_qwen(q), only1));
  // The three s rows are the last 3 * (12 + 4096) bytes; rows 0 and 2 are all zero.
  const size_t s0 = qb.size() - 3 * (12 + 4096);
  auto all_zero = [&](size_t from) {
    for (size_t k = 0; k < 4096; ++k)
      if (qb[from + k] != 0) return false;
    return true;
  };
  EXPECT_TRUE(all_zero(s0 + 12));
  EXPECT_FALSE(all_zero(s0 + (12 + 4096) + 12));
  EXPECT_TRUE(all_zero(s0 + 2 * (12 + 4096) + 12));

  const json f = falcon_tiny();
  States only2{{2, random_values(512, 6)}};
  EXPECT_TRUE(interop::llama_state_seq_bytes(interop::llama_state_layout(f, "cfg"), only2) ==
              expected_file(expect_falcon(f), only2));
  // No trained layer at all is still a valid file: the model's own zero start.
  EXPECT_TRUE(interop::llama_state_seq_bytes(ql, {}) == expected_file(expect_qwen(q), {}));
}

TEST(LlamaState, StreamsAndExtraLayers) {
  const json q = qwen_tiny();
  States st{{0, random_values(1024, 7)}};
  interop::LlamaStateSeqOptions opt;
  opt.n_stream = 3;
  const auto layout = interop::llama_state_layout(q, "cfg", 1);
  EXPECT_EQ(layout.n_layer, 5u);
  EXPECT_EQ(layout.recurrent_layers, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_TRUE(interop::llama_state_seq_bytes(layout, st, opt) == expected_file(expect_qwen(q), st, 3, 1));
  opt.n_stream = 0;
  expect_error([&] { interop::llama_state_seq_bytes(layout, st, opt); }, {"n_stream"});
}

TEST(LlamaState, Refusals) {
  expect_error([] { interop::llama_state_layout(models::Qwen2Config::preset("tiny").to_json(), "m/config.json"); },
               {"m/config.json", "qwen2", "cannot be exported to llama.cpp"});
  json dk = qwen_tiny();
  dk["text_config"]["linear_key_head_dim"] = 8;
  expect_error([&] { interop::llama_state_layout(dk, "cfg"); }, {"linear_key_head_dim == linear_value_head_dim"});
  json lt = qwen_tiny();
  lt["text_config"]["layer_types"] = {"linear_attention", "full_attention", "linear_attention", "full_attention"};
  expect_error([&] { interop::llama_state_layout(lt, "cfg"); }, {"layer_types[1]", "full_attention_interval"});
  json iv = qwen_tiny();
  iv["text_config"]["full_attention_interval"] = 2;  // the stored layer_types follow 4
  expect_error([&] { interop::llama_state_layout(iv, "cfg"); }, {"full_attention_interval = 2"});

  const auto layout = interop::llama_state_layout(qwen_tiny(), "cfg");
  expect_error([&] { interop::llama_state_seq_bytes(layout, {{3, random_values(1024, 1)}}); },
               {"layer 3", "not a recurrent layer"});
  expect_error([&] { interop::llama_state_seq_bytes(layout, {{0, random_values(1000, 1)}}); },
               {"layer 0", "1000"});
  // A refused save leaves neither the target nor a temp file.
  const std::string dir = s0::testing::temp_dir("llama_refuse");
  expect_error([&] { interop::save_llama_state_seq(dir + "/x.bin", layout, {{0, random_values(10, 1)}}); },
               {"layer 0"});
  EXPECT_TRUE(fs::is_empty(dir));
}

TEST(LlamaState, SaveIsAtomicAndEqualsBytes) {
  const auto layout = interop::llama_state_layout(falcon_tiny(), "cfg");
  States st{{1, random_values(512, 9)}};
  const std::string dir = s0::testing::temp_dir("llama_save");
  const std::string path = dir + "/s0.ggsq";
  io::write_file_atomic(path, "old contents");
  const uint64_t n = interop::save_llama_state_seq(path, layout, st);
  const std::string file = io::read_file(path);
  EXPECT_EQ(n, file.size());
  EXPECT_TRUE(file == interop::llama_state_seq_bytes(layout, st));
  size_t entries = 0;
  for (auto& e : fs::directory_iterator(dir)) (void)e, ++entries;
  EXPECT_EQ(entries, 1u);  // no temp file left
}

// ---- `s0 states export` end to end ----

namespace {

std::string write_model_config(const std::string& name, const json& cfg) {
  const std::string dir = s0::testing::temp_dir("llama_model_" + name);
  io::write_file_atomic(dir + "/config.json", cfg.dump(2));
  return dir;
}

std::string write_set(const std::string& name, const std::string& arch, const std::vector<int64_t>& shape,
                      const std::vector<int64_t>& recurrent, const std::vector<int64_t>& trained, double alpha,
                      uint32_t seed) {
  adapters::StateSet set;
  set.arch = arch;
  set.state_shape = shape;
  set.recurrent_layers = recurrent;
  int64_t n = shape[0] * shape[1] * shape[2];
  for (int64_t l : trained) {
    auto v = random_values(static_cast<size_t>(n), seed + static_cast<uint32_t>(l));
    set.states[l] = at::from_blob(v.data(), shape, at::kFloat).clone();
  }
  set.config = {{"n_steps", 20}, {"lr", 1e-3}, {"alpha", alpha}, {"normalize", false}};
  const std::string dir = s0::testing::temp_dir("llama_set_" + name);
  adapters::save_state_set(dir, set);
  return dir;
}

std::string cli() { return S0_CLI_PATH; }

void expect_cli_matches_python(const std::string& model, const std::string& set, const std::string& extra_args,
                               const std::string& tag) {
  const std::string dir = s0::testing::temp_dir("llama_cli_" + tag);
  const auto [rc, out] = s0::testing::run_cmd(cli() + " states export --format llama.cpp --model " + model +
                                              " --out " + dir + "/s0.bin " + extra_args + " " + set);
  ASSERT_EQ(rc, 0) << out;
  const json j = json::parse(out.substr(out.find('{')));
  EXPECT_EQ(j["out"], dir + "/s0.bin");
  const auto [prc, pout] =
      s0::testing::run_cmd("python3 " + s0::testing::repo_root() + "/tools/llama_state_expected.py --model " + model +
                           " --states " + set + " --out " + dir + "/want.bin " + extra_args);
  ASSERT_EQ(prc, 0) << pout;
  const std::string got = io::read_file(dir + "/s0.bin"), want = io::read_file(dir + "/want.bin");
  EXPECT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want) << tag;
  EXPECT_EQ(j["bytes"].get<uint64_t>(), got.size());
}

}  // namespace

TEST(LlamaStateCli, ExportMatchesPythonReference) {
  ASSERT_TRUE(s0::testing::have_python3()) << "python3 is needed for tools/llama_state_expected.py";
  const std::string qm = write_model_config("qwen", qwen_tiny());
  const std::string qs = write_set("qwen", "gated_delta_net", {4, 16, 16}, {0, 1, 2}, {0, 2}, 0.5, 31);
  expect_cli_matches_python(qm, qs, "", "qwen");
  expect_cli_matches_python(qm, qs, "--alpha 0.25 --n-stream 2 --extra-layers 1", "qwen_opts");
  const std::string fm = write_model_config("falcon", falcon_tiny());
  const std::string fs_ = write_set("falcon", "mamba2", {4, 16, 8}, {0, 1, 2}, {1}, 0.5, 41);
  expect_cli_matches_python(fm, fs_, "", "falcon");
}

TEST(LlamaStateCli, ExportWritesScaledStates) {
  // The file carries alpha * S (what s0 injects), not the stored S.
  const std::string fm = write_model_config("falcon_scale", falcon_tiny());
  const std::string set = write_set("falcon_scale", "mamba2", {4, 16, 8}, {0, 1, 2}, {0, 1, 2}, 0.5, 51);
  const std::string dir = s0::testing::temp_dir("llama_cli_scale");
  const auto [rc, out] = s0::testing::run_cmd(cli() + " states export --format llama.cpp --model " + fm + " --out " +
                                              dir + "/s.bin " + set);
  ASSERT_EQ(rc, 0) << out;
  const std::string b = io::read_file(dir + "/s.bin");
  const auto stored = random_values(512, 51 + 2);
  const size_t tail = b.size() - 4 * 512;
  for (int k : {0, 3, 200, 511}) EXPECT_EQ(float_at(b, tail + 4 * k), 0.5f * stored[k]);
}

TEST(LlamaStateCli, Refusals) {
  const std::string qm = write_model_config("qwen_r", qwen_tiny());
  const std::string fm = write_model_config("falcon_r", falcon_tiny());
  const std::string q2 = write_model_config("qwen2_r", models::Qwen2Config::preset("tiny").to_json());
  const std::string qs = write_set("qwen_r", "gated_delta_net", {4, 16, 16}, {0, 1, 2}, {1}, 0.5, 3);
  const std::string fs_ = write_set("falcon_r", "mamba2", {4, 16, 8}, {0, 1, 2}, {1}, 0.5, 3);
  const std::string other = write_set("qwen_shape", "gated_delta_net", {2, 16, 16}, {0, 1, 2}, {1}, 0.5, 3);
  const std::string dir = s0::testing::temp_dir("llama_cli_refuse");
  auto run = [&](const std::string& args) {
    return s0::testing::run_cmd(cli() + " states export --out " + dir + "/x.bin " + args);
  };
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {"--format gguf --model " + qm + " " + qs, "unknown --format 'gguf'"},
      {"--format llama.cpp --model " + q2 + " " + qs, "model_type 'qwen2' cannot be exported to llama.cpp"},
      {"--format llama.cpp --model " + qm + " " + fs_, "its arch is 'mamba2', the model's 'gated_delta_net'"},
      {"--format llama.cpp --model " + fm + " " + qs, "its arch is 'gated_delta_net'"},
      {"--format llama.cpp --model " + qm + " " + other, "its state_shape is [2,16,16], the model's [4,16,16]"},
      {"--format llama.cpp --model " + qm + " --n-stream 0 " + qs, "--n-stream must be >= 1"},
  };
  for (const auto& c : cases) {
    const auto [rc, out] = run(c.args);
    EXPECT_NE(rc, 0) << c.args;
    EXPECT_NE(out.find(c.message), std::string::npos) << c.args << "\n" << out;
  }
  EXPECT_TRUE(fs::is_empty(dir));  // nothing written, no temp file
}
