// `s0 demo`: the main job on the built-in default. Today it runs the S0 mechanics end to end
// on a model it writes itself: init a tiny random Qwen3.5 hybrid, train a state set on a toy
// task, reload it, generate with and without it, and report the loss, what changed and what
// it cost per token. (Collection and evaluation on a pretrained built-in model replace the
// toy parts as those issues land.)
#include <cstdio>
#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "s0/adapters/state_set.h"
#include "s0/generate/generate.h"
#include "s0/io/atomic_file.h"
#include "s0/models/init_model.h"
#include "s0/models/model.h"
#include "s0/text/tokenizer.h"
#include "s0/train/trainer.h"

namespace s0::cli {

Action add_demo(CLI::App& app) {
  struct Opts {
    std::string out = "out/demo";
    int64_t new_tokens = 48;
    int threads = 0;
    int64_t steps = 30;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--out", o->out, "Working directory for the demo's files")->capture_default_str();
  app.add_option("--new-tokens", o->new_tokens, "Tokens generated per prompt")->capture_default_str();
  app.add_option("--threads", o->threads, "Intra-op threads (0 = all cores)")->capture_default_str();
  app.add_option("--steps", o->steps, "S0 training steps")->capture_default_str();
  return [o]() {
    namespace fs = std::filesystem;
    models::configure_runtime(o->threads);
    const std::string model_dir = o->out + "/model", states_dir = o->out + "/states";
    std::fprintf(stderr, "[1/4] writing the built-in tiny Qwen3.5 hybrid to %s\n", model_dir.c_str());
    models::InitOptions init;
    init.seed = 1;
    init.dtype = "f32";
    models::write_random_qwen35(model_dir, models::Qwen35Config::preset("tiny"), init);
    auto model = models::load_model(model_dir, at::kFloat);

    std::fprintf(stderr, "[2/4] training an S0 state set (one [H,K,V] state per GatedDeltaNet layer, model frozen) -> %s\n",
                 states_dir.c_str());
    // A built-in toy task: every prompt asks for the same fixed answer. On random weights this
    // shows the mechanics (the completion loss falls, the outputs change), not a task lift.
    auto tok = text::Tokenizer::from_model_dir(model_dir);
    const char* questions[] = {"lamp green river", "cloud seven apple", "stone quiet lamp", "river apple cloud",
                               "seven stone green", "quiet cloud river"};
    std::vector<train::Example> data;
    for (const char* q : questions) {
      train::Example ex;
      for (auto id : tok.encode(std::string("Q: ") + q + "\nA:")) ex.ids.push_back(id), ex.target.push_back(0);
      for (auto id : tok.encode(" OK DONE", false)) ex.ids.push_back(id), ex.target.push_back(1);
      data.push_back(ex);
    }
    train::TrainConfig cfg;
    cfg.steps = o->steps;
    cfg.lr = 0.05;
    cfg.alpha = 1.0;  // the paper's 0.07 is tuned for real checkpoints, not this random toy
    std::vector<double> losses;
    train::Trainer trainer(*model, data, cfg);
    trainer.train(states_dir, false, [&](const train::StepReport& r) {
      losses.push_back(r.loss);
      if (r.step == 1 || r.step % 10 == 0 || r.step == r.steps)
        std::fprintf(stderr, "      step %lld/%lld  completion loss %.3f\n", static_cast<long long>(r.step),
                     static_cast<long long>(r.steps), r.loss);
    });
    auto loaded = adapters::load_state_set(states_dir, *model);
    auto states = loaded.scaled();

    std::fprintf(stderr, "[3/4] greedy generation, base vs S0\n");
    std::vector<std::vector<int64_t>> prompts = {tok.encode("Q: lamp green river\nA:"),   // a training prompt
                                                 tok.encode("Q: apple lamp seven\nA:")};  // an unseen one
    generate::GenerateOptions opt;
    opt.max_new_tokens = o->new_tokens;
    opt.eos_ids = {-1};  // run the full length so the timings compare equal work
    auto base = generate::generate(*model, prompts, opt);
    auto tuned = generate::generate(*model, prompts, opt, &states);

    std::fprintf(stderr, "[4/4] report\n");
    nlohmann::json report = {{"model", model_dir}, {"states", states_dir}, {"training_loss", losses},
                             {"state_set_bytes", loaded.num_bytes()}, {"prompts", nlohmann::json::array()}};
    double tb = 0, tt = 0;
    int64_t nb = 0, nt = 0;
    std::printf("%-8s %-10s %s\n", "prompt", "tokens", "first generated ids");
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto show = [](const std::vector<int64_t>& v) {
        std::string s;
        for (size_t k = 0; k < std::min<size_t>(v.size(), 12); ++k) s += std::to_string(v[k]) + " ";
        return s;
      };
      size_t same = 0;
      while (same < base[i].tokens.size() && same < tuned[i].tokens.size() &&
             base[i].tokens[same] == tuned[i].tokens[same])
        ++same;
      std::printf("%-8zu %-10s %s  %s\n", i, "base", show(base[i].tokens).c_str(),
                  nlohmann::json(tok.decode(base[i].tokens, true)).dump().c_str());
      std::printf("%-8zu %-10s %s  %s  (first %zu tokens equal to base)\n", i, "S0", show(tuned[i].tokens).c_str(),
                  nlohmann::json(tok.decode(tuned[i].tokens, true)).dump().c_str(), same);
      report["prompts"].push_back({{"base", base[i].tokens}, {"s0", tuned[i].tokens}, {"common_prefix", same}});
      tb += base[i].decode_seconds, nb += base[i].tokens.size() - 1;
      tt += tuned[i].decode_seconds, nt += tuned[i].tokens.size() - 1;
    }
    double rb = nb / std::max(tb, 1e-9), rt = nt / std::max(tt, 1e-9);
    report["decode_tokens_per_s"] = {{"base", rb}, {"s0", rt}, {"s0_over_base", rt / rb}};
    std::printf("\ndecode tokens/s: base %.1f, with S0 %.1f (ratio %.3f); state set %lld bytes\n", rb, rt,
                rt / rb, static_cast<long long>(loaded.num_bytes()));
    const std::string report_path = o->out + "/report.json";
    io::write_file_atomic(report_path, report.dump(2));
    std::printf("report: %s\nstate set: %s\n", report_path.c_str(), states_dir.c_str());
    if (!losses.empty())
      std::printf("training: completion loss %.3f -> %.3f over %zu steps\n", losses.front(), losses.back(), losses.size());
    std::printf("(pipeline demo on a random tiny model: the built-in pretrained model and the evaluation with\n"
                " pass@1 statistics replace it as those issues land)\n");
    return 0;
  };
}

}  // namespace s0::cli
