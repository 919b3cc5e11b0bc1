// Fused training kernels against the ATen compositions they replace, measured in the same
// run (forward, and forward + input-gradient backward), at the 0.8b preset's shapes:
// 512 tokens, conv channels 6144, MLP width 3584, 16 heads of 128, vocab 248320. Then the
// decode-step kernels alone at 1, 16 and 64 rows (GatedDeltaNet step and Falcon-H1-0.5B's
// Mamba-2 step: their f32 states read and written once, from memory (several layers' states
// in turn; the GatedDeltaNet step also on one layer's states, gdn_step_ms); attention step: 8 query / 2 KV heads of 256 over 128 cached positions),
// with the memory each moves per call; the steps from memory and the attention step also with
// the threads in the earlier static shares of the heads (*_static, nn::set_split_rows(false)),
// the two alternating.
//
//   bench_kernels [--threads N] [--tokens 512] [--dtype bf16|f32] [--decode-only]
#include <cstdio>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "bench_util.h"
#include "s0/models/model.h"
#include "s0/nn/activations.h"
#include "s0/nn/attention_step.h"
#include "s0/nn/gdn_step.h"
#include "s0/nn/ssd_step.h"
#include "s0/nn/causal_conv.h"
#include "s0/nn/cross_entropy.h"
#include "s0/nn/l2_heads.h"
#include "s0/nn/norms.h"

using namespace s0;

namespace {

// Best of `reps` timings of f (after one warm-up call), in milliseconds.
// f's best time with the threads sharing the work as they do by default, and with the
// earlier static shares (nn::set_split_rows(false)), the two alternating: {default, static}.
std::pair<double, double> shared_and_static_ms(const std::function<void()>& f, int reps = 5) {
  f();
  double best[2] = {1e30, 1e30};
  for (int i = 0; i < reps; ++i)
    for (int s = 0; s < 2; ++s) {
      nn::set_split_rows(s == 0);
      auto t = bench::Clock::now();
      f();
      best[s] = std::min(best[s], bench::secs(t) * 1e3);
    }
  nn::set_split_rows(true);
  return {best[0], best[1]};
}

double best_ms(const std::function<void()>& f, int reps = 5) {
  f();
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    auto t = bench::Clock::now();
    f();
    best = std::min(best, bench::secs(t) * 1e3);
  }
  return best;
}

// Forward + backward of y = f(inputs) with a random upstream gradient.
double fwd_bwd_ms(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs) {
  std::vector<Tensor> leaves;
  for (const auto& t : inputs) leaves.push_back(t.detach().requires_grad_(true));
  Tensor up = at::randn_like(f(leaves).detach());
  return best_ms([&] {
    Tensor y = f(leaves);
    torch::autograd::grad({y}, leaves, {up});
  });
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0;
  int64_t T = 512;
  std::string dtype = "bf16";
  bool decode_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::stoi(argv[++i]);
    else if (a == "--tokens" && i + 1 < argc) T = std::stoll(argv[++i]);
    else if (a == "--dtype" && i + 1 < argc) dtype = argv[++i];
    else if (a == "--decode-only") decode_only = true;
    else {
      std::fprintf(stderr, "usage: bench_kernels [--threads N] [--tokens 512] [--dtype bf16|f32] [--decode-only]\n");
      return 2;
    }
  }
  models::configure_runtime(threads);
  const auto dt = models::parse_dtype(dtype);
  const int64_t C = 6144, I = 3584, H = 16, d = 128, Kc = 4, V = 248320, D = 1024, M = T / 2;
  nlohmann::json out = {{"threads", at::get_num_threads()}, {"tokens", T}, {"dtype", dtype}};
  auto row = [&](const std::string& name, double fused, double ref) {
    out[name] = {{"fused_ms", fused}, {"reference_ms", ref}, {"speedup", ref / fused}};
  };

  if (!decode_only) {  // training kernels
  {  // causal conv + SiLU
    Tensor x = at::randn({1, T, C}).to(dt), w = at::randn({C, Kc}) * 0.5;
    auto fused = [&](const std::vector<Tensor>& in) { return nn::conv_silu(in[0], w, Tensor(), Tensor()); };
    auto ref = [&](const std::vector<Tensor>& in) {
      Tensor f = at::cat({at::zeros({1, C, Kc - 1}, in[0].options()), in[0].transpose(1, 2)}, 2).to(at::kFloat);
      Tensor y = f.narrow(2, 0, T) * w.select(1, 0).view({1, C, 1});
      for (int64_t j = 1; j < Kc; ++j) y = y + f.narrow(2, j, T) * w.select(1, j).view({1, C, 1});
      return nn::silu(y.to(dt)).transpose(1, 2);
    };
    row("conv_silu_forward", best_ms([&] { NoGrad ng; fused({x}); }), best_ms([&] { NoGrad ng; ref({x}); }));
    row("conv_silu_fwd_bwd", fwd_bwd_ms(fused, {x}), fwd_bwd_ms(ref, {x}));
  }
  {  // silu(g) * u
    Tensor g = at::randn({1, T, I}).to(dt), u = at::randn({1, T, I}).to(dt);
    auto fused = [&](const std::vector<Tensor>& in) { return nn::silu_mul(in[0], in[1]); };
    auto ref = [&](const std::vector<Tensor>& in) { return nn::silu(in[0]) * in[1]; };
    row("silu_mul_fwd_bwd", fwd_bwd_ms(fused, {g, u}), fwd_bwd_ms(ref, {g, u}));
  }
  {  // L2 norm of q to head-major f32
    Tensor q = at::randn({1, T, H, d}).to(dt);
    auto fused = [&](const std::vector<Tensor>& in) { return nn::l2_norm_heads(in[0], 0.088); };
    auto ref = [&](const std::vector<Tensor>& in) {
      return (nn::l2_norm(in[0].to(at::kFloat)) * 0.088).transpose(1, 2).contiguous();
    };
    row("l2_norm_heads_fwd_bwd", fwd_bwd_ms(fused, {q}), fwd_bwd_ms(ref, {q}));
  }
  {  // gated RMSNorm
    Tensor o = at::randn({1, H, T, d}), z = at::randn({1, T, H, d}).to(dt), w = at::randn({d}).to(dt);
    auto fused = [&](const std::vector<Tensor>& in) { return nn::gated_rms_norm_heads(in[0], in[1], w, 1e-6); };
    auto ref = [&](const std::vector<Tensor>& in) {
      return nn::gated_rms_norm(in[0].transpose(1, 2), in[1], w, 1e-6, dt).reshape({1, T, H * d});
    };
    row("gated_rms_norm_fwd_bwd", fwd_bwd_ms(fused, {o, z}), fwd_bwd_ms(ref, {o, z}));
  }
  {  // cross-entropy over the vocabulary for M completion rows: loss + gradient w.r.t. rows
    Tensor h = at::randn({M, D}).to(dt), w = (at::randn({V, D}) * 0.02).to(dt);
    Tensor labels = at::randint(0, V, {M}, at::kLong);
    const double fused = best_ms([&] { nn::cross_entropy_rows(h, w, labels, 1.0 / M); }, 3);
    const double ref = best_ms(
        [&] {
          Tensor r = h.detach().requires_grad_(true);
          Tensor loss = at::cross_entropy_loss(at::matmul(r, w.t()).to(at::kFloat), labels);
          torch::autograd::grad({loss}, {r});
        },
        3);
    row("cross_entropy_rows", fused, ref);
  }
  }  // training kernels
  {  // decode-step kernels
    NoGrad ng;
    nlohmann::json rows = nlohmann::json::array();
    for (int64_t B : {1, 16, 64}) {
      // GatedDeltaNet: 16 key and value heads of 128, conv over 6144 channels (4 taps).
      const int64_t Hk = 16, Hv = 16, dk = 128, dv = 128, Cc = 2 * Hk * dk + Hv * dv;
      std::vector<Tensor> conv(B), state(B);
      std::vector<nn::GdnStepCache> gc;
      for (int64_t b = 0; b < B; ++b) {
        conv[b] = (at::randn({1, Cc, Kc - 1}) * 0.5).to(dt);
        state[b] = at::randn({1, Hv, dk, dv}) * 0.01;
        gc.push_back({&conv[b], &state[b], 1});
      }
      Tensor qkv = at::randn({B, Cc}).to(dt), z = at::randn({B, Hv * dv}).to(dt), bb = at::randn({B, Hv}).to(dt),
             aa = at::randn({B, Hv}).to(dt);
      Tensor cw = at::randn({Cc, Kc}) * 0.5, negA = -at::rand({Hv}), dtb = at::randn({Hv}) * 0.1,
             nw = at::randn({dv}).to(dt);
      const double gdn = best_ms([&] { nn::gdn_decode_step(qkv, z, bb, aa, cw, negA, dtb, nw, {Hk, Hv, dk, dv}, 1e-6, gc); });
      const double state_bytes = 2.0 * B * Hv * dk * dv * 4;
      // The same with several layers' states (at least 128 MB in all) stepped in turn, as in
      // a decode step: one layer's (1 MB a row) stay partly in cache at 1-16 rows above.
      const int64_t gl = std::max<int64_t>(1, (int64_t(128) << 20) / (B * Hv * dk * dv * 4));
      std::vector<Tensor> gconv(gl * B), gstate(gl * B);
      std::vector<std::vector<nn::GdnStepCache>> gcl(gl);
      for (int64_t l = 0; l < gl; ++l)
        for (int64_t b = 0; b < B; ++b) {
          gconv[l * B + b] = conv[b].clone();
          gstate[l * B + b] = state[b].clone();
          gcl[l].push_back({&gconv[l * B + b], &gstate[l * B + b], 1});
        }
      auto [gdn_mem, gdn_mem_static] = shared_and_static_ms([&] {
        for (int64_t l = 0; l < gl; ++l)
          nn::gdn_decode_step(qkv, z, bb, aa, cw, negA, dtb, nw, {Hk, Hv, dk, dv}, 1e-6, gcl[l]);
      });
      gdn_mem /= static_cast<double>(gl), gdn_mem_static /= static_cast<double>(gl);
      // Attention: 8 query heads, 2 KV heads of 256, partial RoPE over 64 dims, 128 cached positions.
      const int64_t Hq = 8, KVh = 2, hd = 256, past = 128;
      std::vector<Tensor> kc(B), vc(B);
      std::vector<nn::KvStepCache> ac;
      for (int64_t b = 0; b < B; ++b) {
        kc[b] = at::randn({1, KVh, 2 * past, hd}).to(dt), vc[b] = at::randn({1, KVh, 2 * past, hd}).to(dt);
        ac.push_back({&kc[b], &vc[b], past, 1});
      }
      Tensor q = at::randn({B, 1, Hq, hd}).to(dt), k = at::randn({B, 1, KVh, hd}).to(dt), v = at::randn({B, 1, KVh, hd}).to(dt);
      Tensor inv_freq = at::pow(10000.0, -at::arange(0, 64, 2, at::kFloat) / 64.0);
      const auto [att, att_static] = shared_and_static_ms([&] { nn::attention_decode_step(q, k, v, inv_freq, 1.0 / 16, ac); });
      const double kv_bytes = 2.0 * B * KVh * (past + 1) * hd * (dt == at::kBFloat16 ? 2 : 4);
      // Mamba-2 (SSD) step at Falcon-H1-0.5B's shape: 24 heads of 64, one group, state 128,
      // conv over 1536 + 2 x 128 channels (4 taps, bias), plain gate.
      // Several layers' states (at least 128 MB in all), stepped in turn as a decode step does,
      // so that they come from memory rather than cache; time per layer.
      const int64_t H = 24, P = 64, G = 1, N = 128, Cd = H * P + 2 * G * N;
      const int64_t nl = std::max<int64_t>(1, (int64_t(128) << 20) / (B * H * P * N * 4));
      std::vector<Tensor> sconv(nl * B), sstate(nl * B);
      std::vector<std::vector<nn::SsdStepCache>> sc(nl);
      for (int64_t l = 0; l < nl; ++l)
        for (int64_t b = 0; b < B; ++b) {
          sconv[l * B + b] = (at::randn({1, Cd, Kc - 1}) * 0.5).to(dt);
          sstate[l * B + b] = at::randn({1, H, P, N}) * 0.01;
          sc[l].push_back({&sconv[l * B + b], &sstate[l * B + b], 1});
        }
      nn::SsdStepLayer sl;
      sl.conv_w = at::randn({Cd, Kc}) * 0.5, sl.conv_b = at::randn({Cd}) * 0.1;
      sl.dt_bias = at::randn({H}) * 0.1, sl.neg_A = -at::rand({H}), sl.D = at::randn({H});
      Tensor zxbcdt = at::randn({B, H * P + Cd + H}).to(dt);
      auto [ssd, ssd_static] = shared_and_static_ms([&] {
        for (int64_t l = 0; l < nl; ++l) nn::ssd_decode_step(zxbcdt, sl, {H, P, G, N}, sc[l]);
      });
      ssd /= static_cast<double>(nl), ssd_static /= static_cast<double>(nl);
      const double ssd_bytes = 2.0 * B * H * P * N * 4;
      rows.push_back({{"rows", B},
                      {"gdn_step_ms", gdn},
                      {"gdn_state_gbps", state_bytes / gdn / 1e6},
                      {"gdn_step_from_memory_ms", gdn_mem},
                      {"gdn_state_from_memory_gbps", state_bytes / gdn_mem / 1e6},
                      {"gdn_state_from_memory_gbps_static", state_bytes / gdn_mem_static / 1e6},
                      {"ssd_step_ms", ssd},
                      {"ssd_state_gbps", ssd_bytes / ssd / 1e6},
                      {"ssd_state_gbps_static", ssd_bytes / ssd_static / 1e6},
                      {"attention_step_ms", att},
                      {"attention_step_ms_static", att_static},
                      {"attention_kv_gbps", kv_bytes / att / 1e6}});
    }
    out["decode_step_kernels"] = rows;
  }
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}
