// Engine benchmark for a model directory (or a preset written with random weights), printing
// one JSON object:
//   - the machine's streaming read bandwidth and the bf16/f32 GEMM rate, measured in the
//     same run (the two rooflines of decode);
//   - prefill tokens/s of one prompt, base and with a random non-zero S0 state set;
//   - decode tokens/s through CausalLM::decode_step (the engine's step) at several batch
//     sizes, each sequence continuing its own prefilled cache, base and S0 alternating, with
//     the fraction of the roofline reached: a step must at least read every weight once
//     (bytes / bandwidth) and do 2 x params FLOPs per row (flops / GEMM rate); the
//     *_with_states variants add each sequence's f32 recurrent states, read and written once;
//     bandwidth_fraction_adjacent divides each base repeat's weight-read rate by a streaming
//     pass run just before it (median over repeats: robust to a host whose bandwidth drifts);
//   - `serial`: a step's OpenMP parallel regions, the time inside them and the main thread's
//     time between them (ATen calls, allocation, small ops while the other threads wait),
//     per step over `steps` more base steps (GOMP_parallel interposed below);
//     with --profile, the ATen operators those steps call (count and self time per step,
//     top 25; the legacy operator profiler, so s0's own kernels show only through ATen calls);
//   - the time of the step's projections alone (every layer weight streamed through the
//     decode kernel for B rows; with AMX, the same through the AVX-512 kernel; the same through
//     at::linear, i.e. oneDNN; the LM head), which
//     shows how much of a step is not weight streaming.
//
//   bench_engine [--arch qwen35|falcon_h1|qwen2] --preset 0.8b --dtype bf16 [--threads 0] [--prompt-len
//   512]
//                [--batches 1,4,16,64] [--steps 12] [--repeats 3] [--kernel auto|avx512|pairs]
//                [--walk auto|one-row|blocked] [--huge-pages 1|0] [--layout auto|rows|pairs|both] [--profile]
//                [--split-rows on|off|both]
//   (--layout: the weights' layout (models::CausalLM::set_pair_layout): auto as generation
//   lays them out (models::use_generation_layout), rows, k-pairs, or both: every timed decode
//   repeat runs in rows and in k-pairs one after the other (the layout changed in place in
//   between), reported side by side as rows_* / pairs_*; the rest of the run in k-pairs;
//   --kernel avx512: bf16 decode products through the AVX-512 kernel even where AMX exists;
//   --kernel pairs: the experimental k-pair kernel, nn::DecodeKernel::kPairs;
//   --walk: the AVX-512 kernels' row walk (nn::RowWalk; same results, speed only);
//   --split-rows: how the threads share a step's work (nn::set_split_rows: the products' weight
//   rows and the recurrent/attention steps' heads; same results, speed only): on (each thread
//   its own contiguous share, then the others' leftovers; the default), off (the earlier
//   schemes: product rows in alternate chunks from one cursor, heads in static shares), or
//   both: every timed decode repeat runs base decode the earlier way, then base and S0 the
//   default way, reported as one_cursor_base_tokens_per_s and split_over_one_cursor (not
//   together with --layout both);
//   --huge-pages 0: weights and heap on 4 KB pages, to measure what 2 MB pages are worth,
//   util/huge_pages.h)
//   bench_engine --model DIR --dtype f32
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include <ATen/Parallel.h>

#include "bench_util.h"
#include "op_profile.h"
#include "s0/models/weights.h"
#include "s0/generate/engine.h"
#include "s0/adapters/prefix.h"
#include "s0/generate/sampler.h"
#include "s0/models/init_model.h"
#include "s0/models/model.h"
#include "s0/nn/linear.h"
#include "s0/util/error.h"

using namespace s0;
using bench::Clock;
using bench::secs;

using s0::bench::int_list;
using s0::bench::median;

// ---- the main thread's time between parallel regions ------------------------------------
// Every OpenMP parallel region, s0's and libtorch's alike (GCC's `omp parallel` and
// libtorch's OpenMP build both enter libgomp through GOMP_parallel), passes through this
// definition, which comes before libgomp's in symbol lookup and forwards to it. While the
// thread that called RegionTimer::start() counts, it times each region it starts and the
// gap before it: the gaps are the step's serial work (ATen calls, allocation, small ops on
// the main thread) during which the other threads wait.
namespace {
struct RegionTimer {
  static thread_local bool counting;
  static thread_local long regions;
  static thread_local double in_s, between_s;
  static thread_local Clock::time_point last, t0;
  static void start() { counting = true, regions = 0, in_s = between_s = 0, last = t0 = Clock::now(); }
  static void stop() {
    between_s += std::chrono::duration<double>(Clock::now() - last).count();
    counting = false;
  }
};
thread_local bool RegionTimer::counting = false;
thread_local long RegionTimer::regions = 0;
thread_local double RegionTimer::in_s = 0, RegionTimer::between_s = 0;
thread_local Clock::time_point RegionTimer::last, RegionTimer::t0;
}  // namespace

extern "C" void GOMP_parallel(void (*fn)(void*), void* data, unsigned nthreads, unsigned flags) {
  using Real = void (*)(void (*)(void*), void*, unsigned, unsigned);
  static const Real real = [] {
    auto f = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "GOMP_parallel"));
    if (!f) {
      std::fprintf(stderr, "bench_engine: libgomp's GOMP_parallel not found\n");
      std::abort();
    }
    return f;
  }();
  if (!RegionTimer::counting) return real(fn, data, nthreads, flags);
  const auto a = Clock::now();
  RegionTimer::between_s += std::chrono::duration<double>(a - RegionTimer::last).count();
  real(fn, data, nthreads, flags);
  RegionTimer::last = Clock::now();
  RegionTimer::in_s += std::chrono::duration<double>(RegionTimer::last - a).count();
  ++RegionTimer::regions;
}

// The next tokens of a step's logits [B, V] as the decode engine picks them greedily: each
// row through a temperature-0 sampler, the rows through the engine's row picker.
static Tensor greedy(const Tensor& logits) {
  return at::tensor(s0::generate::pick_rows(logits,
                                            [](int64_t, const float* r, int64_t V) {
                                              return s0::generate::Sampler({0.0, 0, 1.0, 0}).sample(r, V);
                                            }),
                    at::kLong);
}

int main(int argc, char** argv) {
  bench::huge_pages_from_args(argc, argv);
  std::string model_dir, preset, dtype = "bf16", cache_dir = "/tmp/s0-bench", arch = "qwen35";
  int threads = 0, prompt_len = 512, steps = 12, repeats = 3;
  std::vector<int64_t> batches = {1, 4, 16, 64};
  std::string layout = "auto";
  std::string split = "on";
  bool profile = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw Error("missing value after " + a);
      return argv[++i];
    };
    if (a == "--model")
      model_dir = next();
    else if (a == "--preset")
      preset = next();
    else if (a == "--arch")
      arch = next();
    else if (a == "--dtype")
      dtype = next();
    else if (a == "--threads")
      threads = std::stoi(next());
    else if (a == "--prompt-len")
      prompt_len = std::stoi(next());
    else if (a == "--steps" || a == "--decode")
      steps = std::stoi(next());
    else if (a == "--batches")
      batches = int_list(next());
    else if (a == "--repeats")
      repeats = std::stoi(next());
    else if (a == "--kernel") {
      const auto k = nn::parse_decode_kernel(next());
      if (!k) throw Error("--kernel: auto, avx512 or pairs");
      nn::set_decode_kernel(*k);
    } else if (a == "--walk") {
      const std::string v = next();
      if (v != "auto" && v != "one-row" && v != "blocked") throw Error("--walk: auto, one-row or blocked");
      nn::set_row_walk(v == "auto"      ? nn::RowWalk::kAuto
                       : v == "one-row" ? nn::RowWalk::kOneRow
                                        : nn::RowWalk::kBlocked);
    } else if (a == "--huge-pages") {
      const std::string v = next();
      if (v != "0" && v != "1") throw Error("--huge-pages: 0 or 1");  // applied by huge_pages_from_args
    } else if (a == "--profile") {
      profile = true;
    } else if (a == "--layout") {
      layout = next();
      if (layout != "auto" && layout != "rows" && layout != "pairs" && layout != "both")
        throw Error("--layout: auto, rows, pairs or both");
    } else if (a == "--split-rows") {
      split = next();
      if (split != "on" && split != "off" && split != "both") throw Error("--split-rows: on, off or both");
    } else if (a == "--cache-dir")
      cache_dir = next();
    else {
      std::fprintf(stderr,
                   "usage: bench_engine (--model DIR | [--arch qwen35|falcon_h1|qwen2] --preset NAME) "
                   "[--dtype bf16|f32]\n"
                   "       [--threads N] [--prompt-len 512] [--batches 1,4,16,64] [--steps 12] "
                   "[--repeats 3]\n"
                   "       [--kernel auto|avx512|pairs] [--walk auto|one-row|blocked] [--huge-pages 1|0]\n"
                   "       [--layout auto|rows|pairs|both] [--profile] [--split-rows on|off|both]\n"
                   "       [--cache-dir /tmp/s0-bench]\n");
      return 2;
    }
  }
  try {
    if (layout == "both" && split == "both") throw Error("--layout both and --split-rows both: one at a time");
    models::configure_runtime(threads);
    nn::set_split_rows(split != "off");
    nlohmann::json out;
    out["split_rows"] = split;
    if (model_dir.empty()) {
      if (preset.empty()) preset = "tiny";
      model_dir = cache_dir + "/" + arch + "-" + preset + "-" + dtype;
      if (double s = bench::ensure_preset_dir(model_dir, preset, dtype, arch); s > 0)
        out["init_model_seconds"] = s;
    }
    const auto st = models::parse_dtype(dtype);
    auto t0 = Clock::now();
    auto model = models::load_model(model_dir, st);
    out["load_seconds"] = secs(t0);
    // The weights' layout; `both` alternates rows and k-pairs in the timed repeats.
    t0 = Clock::now();
    if (layout == "auto") models::use_generation_layout(*model);
    else if (layout != "rows" && model->set_pair_layout(true) == 0)
      throw Error("--layout " + layout + ": no weight of this model can be laid out in k-pairs (bf16 only)");
    out["layout_seconds"] = secs(t0);
    const bool pairs_laid = model->pair_layout();
    out["weight_layout"] = layout == "both" ? "both" : pairs_laid ? "pairs" : "rows";
    out["model"] = model_dir;
    out["dtype"] = dtype;
    out["threads"] = at::get_num_threads();
    out["prompt_len"] = prompt_len;
    out["decode_kernel"] = st != at::kBFloat16                              ? "avx512"
                           : pairs_laid || nn::decode_kernel() == nn::DecodeKernel::kPairs ? "pairs"
                           : nn::amx_available() && nn::decode_kernel() == nn::DecodeKernel::kAuto
                               ? "amx"
                               : "avx512";
    const nn::RowWalk walk = nn::row_walk() == nn::RowWalk::kAuto ? nn::auto_row_walk() : nn::row_walk();
    out["row_walk"] = walk == nn::RowWalk::kOneRow ? "one_row" : "blocked";
    NoGrad ng;

    // The rooflines, measured in this run: streaming read bandwidth (the best of 5 passes;
    // the probe also runs once before each timed decode repeat, for the adjacent fractions
    // below), and the GEMM rate of [prompt_len, 1024] x [4096, 1024]^T in the model dtype
    // (nn::linear and at::linear).
    auto probe = std::make_unique<bench::StreamProbe>();
    const double bw = probe->best_of(5);
    out["bandwidth_gbps"] = bw;
    const double gemm = bench::gemm_gflops(prompt_len, 1024, 4096, st,
                                           [](auto& x, auto& w) { return nn::linear(x, w); });
    out["gemm_gflops"] = gemm;
    out["gemm_gflops_at_linear"] = bench::gemm_gflops(
        prompt_len, 1024, 4096, st, [](auto& x, auto& w) { return at::linear(x, w); });
    out["gemm_shape"] = {prompt_len, 1024, 4096};

    // What one decode step must read and compute (bench::decode_params).
    auto linears = model->linear_layers();
    const int64_t hidden = nn::in_features(linears.at(0).second);
    const int64_t elt = at::elementSize(st);
    const int64_t params = bench::decode_params(*model);
    const double bytes_per_step = static_cast<double>(params) * elt;
    const double flops_per_row = 2.0 * params;
    out["weight_bytes_per_step"] = bytes_per_step;
    out["flops_per_token"] = flops_per_row;
    out["bandwidth_limit_tokens_per_s"] = bw * 1e9 / bytes_per_step;
    // Each sequence's recurrent states (f32) are read and written once per step: at large
    // batches this traffic rivals the weights' (the *_with_states fractions count it).
    double state_numel = 1;
    for (int64_t d : model->state_shape()) state_numel *= static_cast<double>(d);
    const double state_bytes_per_row = 2.0 * 4.0 * state_numel * static_cast<double>(model->recurrent_layers().size());
    out["state_bytes_per_row_per_step"] = state_bytes_per_row;

    auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
    Tensor prompt = at::randint(0, std::min<int64_t>(model->vocab_size(), 240000), {1, prompt_len},
                                gen, at::kLong);
    // The adapter arm ("s0" in the output): a random S0 state set; on a model without
    // recurrent layers (qwen2) a random 30-token prefix instead (the prefix-tuning control).
    models::StateMap states;
    for (auto l : model->recurrent_layers())
      states[l] = at::randn(model->state_shape(), gen) * 0.07;
    std::shared_ptr<const models::Adapter> adapter = std::make_shared<models::InitialStates>(states);
    if (states.empty()) {
      const auto shape = adapters::prefix_shape(*model);
      adapter = adapters::prefix_adapter(shape, at::randn({30, shape.width()}, gen), model->attention_layers());
    }
    out["adapter_arm"] = states.empty() ? "prefix of 30 virtual tokens" : "S0 state set";

    // Prefill: base and S0 alternate so that machine noise hits both alike; medians.
    // --layout both: each repeat's base prefill in rows first (pb_rows).
    std::vector<double> pb, ps, pb_rows;
    models::Cache prefilled[2];
    Tensor first[2];
    for (int r = 0; r < repeats; ++r) {
      if (layout == "both") {
        model->set_pair_layout(false);
        auto cache = model->new_cache(1);
        auto t = Clock::now();
        model->forward(prompt, cache, true);
        pb_rows.push_back(secs(t));
        model->set_pair_layout(true);
      }
      for (int s0 = 0; s0 < 2; ++s0) {
        auto cache = model->new_cache(1, s0 ? adapter : nullptr);
        auto t = Clock::now();
        first[s0] = model->forward(prompt, cache, true).argmax(-1).view({1});
        (s0 ? ps : pb).push_back(secs(t));
        prefilled[s0] = std::move(cache);
      }
    }
    out["repeats"] = repeats;
    out["base"] = {{"prefill_tokens_per_s", prompt_len / median(pb)}};
    if (!pb_rows.empty()) out["rows_prefill_tokens_per_s"] = prompt_len / median(pb_rows);
    out["s0"] = {{"prefill_tokens_per_s", prompt_len / median(ps)}};
    out["s0_over_base_prefill"] = median(pb) / median(ps);

    // Decode at each batch size: B copies of the prefilled cache (base or S0), one warm-up
    // step (the KV buffers grow once), then `steps` timed steps; base and S0 alternate.
    nlohmann::json dec = nlohmann::json::array();
    for (int B : batches) {
      std::vector<double> tb, ts, adj;  // adj: each base repeat's read rate / the probe's just before
      std::vector<double> tb_rows, ts_rows;  // --layout both: the same in rows
      std::vector<double> tb_one;            // --split-rows both: base with one cursor
      const bool ref_arms = layout == "both" || split == "both";
      for (int r = 0; r < repeats; ++r)
        for (int arm = ref_arms ? 0 : 2; arm < 4; ++arm) {
          // arms 0-1: rows (--layout both) or base with one cursor (--split-rows both: no
          // S0 arm), 2-3: the run's settings; even: base, odd: S0
          const int s0 = arm % 2;
          const bool rows_arm = arm < 2;
          if (split == "both" && arm == 1) continue;
          if (layout == "both" && arm % 2 == 0) model->set_pair_layout(!rows_arm);
          if (split == "both" && arm % 2 == 0) nn::set_split_rows(!rows_arm);
          std::vector<models::Cache> caches;
          caches.reserve(B);
          for (int b = 0; b < B; ++b) caches.push_back(models::copy_cache(prefilled[s0]));
          std::vector<models::Cache*> ptrs;
          for (auto& c : caches) ptrs.push_back(&c);
          Tensor tok = first[s0].expand({B}).contiguous();
          const double probe_gbps = probe->pass();
          tok = greedy(model->decode_step(tok, ptrs));
          auto t = Clock::now();
          for (int i = 0; i < steps; ++i) tok = greedy(model->decode_step(tok, ptrs));
          if (rows_arm && split == "both") {
            tb_one.push_back(secs(t) / steps);
            continue;
          }
          if (rows_arm) {
            (s0 ? ts_rows : tb_rows).push_back(secs(t) / steps);
            continue;
          }
          (s0 ? ts : tb).push_back(secs(t) / steps);
          if (!s0) adj.push_back(bytes_per_step / tb.back() / 1e9 / probe_gbps);
        }
      // The serial part of a step: `steps` base steps more with the region timer on.
      nlohmann::json serial;
      {
        std::vector<models::Cache> caches;
        for (int b = 0; b < B; ++b) caches.push_back(models::copy_cache(prefilled[0]));
        std::vector<models::Cache*> ptrs;
        for (auto& c : caches) ptrs.push_back(&c);
        Tensor tok = greedy(model->decode_step(first[0].expand({B}).contiguous(), ptrs));
        RegionTimer::start();
        for (int i = 0; i < steps; ++i) tok = greedy(model->decode_step(tok, ptrs));
        RegionTimer::stop();
        serial = {{"regions_per_step", static_cast<double>(RegionTimer::regions) / steps},
                  {"in_regions_ms", 1e3 * RegionTimer::in_s / steps},
                  {"between_regions_ms", 1e3 * RegionTimer::between_s / steps}};
        if (profile) {
          // The ATen operators a step calls (the serial part's usual suspects), per step.
          namespace pf = torch::autograd::profiler;
          pf::enableProfilerLegacy(
              torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU, /*shapes=*/true));
          for (int i = 0; i < steps; ++i) tok = greedy(model->decode_step(tok, ptrs));
          auto events = pf::disableProfilerLegacy();
          nlohmann::json ops = bench::op_profile(events, 25, false);
          double calls = 0;
          for (const auto& list : events)
            for (const auto& e : list) calls += e.kind() == torch::autograd::profiler::EventKind::PushRange;
          for (auto& o : ops) {
            o["calls_per_step"] = o["calls"].get<double>() / steps;
            o["self_ms_per_step"] = o["self_ms"].get<double>() / steps;
          }
          serial["aten_calls_per_step"] = calls / steps;
          serial["top_ops"] = ops;
          nlohmann::json by_shape = bench::op_profile(events, 40, true);
          for (auto& o : by_shape) o["calls_per_step"] = o["calls"].get<double>() / steps;
          serial["top_ops_by_shape"] = by_shape;
        }
      }
      // Where one step goes: decode_step's loop replayed with a timer per layer, summed by
      // layer kind, then the final norm and the LM head, then the argmax (base caches, one step).
      double t_rec = 0, t_att = 0, t_head = 0, t_argmax = 0, t_sample = 0;
      {
        std::vector<models::Cache> caches;
        for (int b = 0; b < B; ++b) caches.push_back(models::copy_cache(prefilled[0]));
        const auto rec = model->recurrent_layers();
        for (int rep = 0; rep < 2; ++rep) {  // the first pass grows the KV buffers
          t_rec = t_att = 0;
          Tensor h = model->embed(first[0].expand({B}).contiguous().view({B, 1}));
          models::SeqGroups groups(static_cast<size_t>(B));
          for (int64_t l = 0; l < model->num_layers(); ++l) {
            for (int b = 0; b < B; ++b)
              groups[b] = {&caches[b].layers[l], caches[b].length, 1, nullptr};
            auto t = Clock::now();
            h = model->layer(l, h, groups);
            (std::find(rec.begin(), rec.end(), l) != rec.end() ? t_rec : t_att) += secs(t);
          }
          for (auto& c : caches) c.length += 1;
          auto t = Clock::now();
          Tensor logits = model->logits(model->final_norm(h)).view({B, -1});
          t_head = secs(t);
          t = Clock::now();
          greedy(logits);
          t_argmax = secs(t);
          // What sampling one row costs (collect's settings: temperature 0.7, top-p 0.95),
          // on this step's logits; the engine samples the rows on the intra-op threads.
          Tensor lf = logits.to(at::kFloat).contiguous();
          generate::Sampler sampler({0.7, 0, 0.95, 1});
          t = Clock::now();
          for (int b = 0; b < B; ++b) sampler.sample(lf.data_ptr<float>() + b * lf.size(1), lf.size(1));
          t_sample = secs(t) / B;
        }
      }
      // The projections alone: every weight (LM head included) through the decode kernel
      // for B rows.
      std::map<int64_t, Tensor> xs;
      for (const auto& [name, w] : linears)
        if (!xs.count(nn::in_features(w))) xs[nn::in_features(w)] = at::randn({B, nn::in_features(w)}, gen).to(st);
      Tensor hx = at::randn({B, 1, hidden}, gen).to(st);
      std::vector<double> tp, th;
      for (int r = 0; r < 3; ++r) {
        auto t = Clock::now();
        for (const auto& [name, w] : linears) nn::linear_rows(xs[nn::in_features(w)], w);
        tp.push_back(secs(t));
        t = Clock::now();
        model->logits(hx);
        th.push_back(secs(t));
      }
      // With AMX in use, the same products through the AVX-512 decode kernel.
      std::vector<double> tv;
      if (nn::amx_available() && nn::decode_kernel() == nn::DecodeKernel::kAuto && !pairs_laid) {
        nn::set_decode_kernel(nn::DecodeKernel::kAvx512);
        for (int r = 0; r < 3; ++r) {
          auto t = Clock::now();
          for (const auto& [name, w] : linears) nn::linear_rows(xs[w.size(1)], w);
          tv.push_back(secs(t));
        }
        nn::set_decode_kernel(nn::DecodeKernel::kAuto);
      }
      // The same products through at::linear (oneDNN for bf16): the GEMM library's rate at
      // this batch, for comparison with the decode kernel (weights in rows only).
      std::vector<double> tl;
      for (int r = 0; r < 3 && !pairs_laid; ++r) {
        auto t = Clock::now();
        for (const auto& [name, w] : linears) at::linear(xs[nn::in_features(w)], w);
        tl.push_back(secs(t));
      }
      const double step_s = median(tb), step_s0 = median(ts);
      const auto bound = bench::step_bounds(bytes_per_step, B, flops_per_row, bw, gemm);
      const double roof_s = bound.roof_s();
      const double roof_states_s =
          bench::step_bounds(bytes_per_step + B * state_bytes_per_row, B, flops_per_row, bw, gemm).roof_s();
      dec.push_back({{"batch", B},
                     {"base_tokens_per_s", B / step_s},
                     {"s0_tokens_per_s", B / step_s0},
                     {"ms_per_step", 1e3 * step_s},
                     {"s0_over_base", step_s / step_s0},
                     {"roofline_tokens_per_s", B / roof_s},
                     {"roofline_fraction", roof_s / step_s},
                     {"bandwidth_fraction", bound.mem_s / step_s},
                     {"bandwidth_fraction_adjacent", median(adj)},
                     {"gemm_fraction", bound.gemm_s / step_s},
                     {"roofline_tokens_per_s_with_states", B / roof_states_s},
                     {"roofline_fraction_with_states", roof_states_s / step_s},
                     {"projections_ms", 1e3 * median(tp)},
                     {"projections_ms_at_linear", tl.empty() ? nlohmann::json() : nlohmann::json(1e3 * median(tl))},
                     {"rows_base_tokens_per_s", tb_rows.empty() ? nlohmann::json() : nlohmann::json(B / median(tb_rows))},
                     {"rows_s0_tokens_per_s", ts_rows.empty() ? nlohmann::json() : nlohmann::json(B / median(ts_rows))},
                     {"pairs_over_rows", tb_rows.empty() ? nlohmann::json() : nlohmann::json(median(tb_rows) / step_s)},
                     {"one_cursor_base_tokens_per_s", tb_one.empty() ? nlohmann::json() : nlohmann::json(B / median(tb_one))},
                     {"split_over_one_cursor", tb_one.empty() ? nlohmann::json() : nlohmann::json(median(tb_one) / step_s)},
                     {"projections_ms_avx512", tv.empty() ? nlohmann::json() : nlohmann::json(1e3 * median(tv))},
                     {"lm_head_ms", 1e3 * median(th)},
                     {"step_breakdown_ms",
                      {{"recurrent_layers", 1e3 * t_rec},
                       {"attention_layers", 1e3 * t_att},
                       {"head", 1e3 * t_head},
                       {"argmax", 1e3 * t_argmax}}},
                     {"sample_ms_per_row_top_p", 1e3 * t_sample},
                     {"serial", serial}});
    }
    out["decode"] = dec;
    out["steps"] = steps;
    probe.reset();
    out["rss_gb"] = bench::proc_mb("/proc/self/status", "VmRSS") * 1024 / 1e6;
    out["huge_pages"] = {{"weights", util::huge_pages_wanted()},
                         {"heap", util::huge_page_heap()},
                         {"anon_huge_pages_mb", bench::proc_mb("/proc/self/smaps_rollup", "AnonHugePages")}};
    std::printf("%s\n", out.dump(2).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
