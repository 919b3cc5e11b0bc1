// s0: S0 tuning for hybrid recurrent-attention language models.
#include <cstdio>
#include <map>
#include <set>
#include <string>

#include "commands.h"
#include "s0/util/error.h"
#include "s0/util/huge_pages.h"

int main(int argc, char** argv) {
  // Subcommands that load a model and stream its weights and recurrent states: ask for 2 MB
  // pages for the heap too. This re-executes the program once (libtorch's start-up, ~0.4 s,
  // twice), so the quick subcommands (tokenize, states, check, ...) do not. S0_HUGE_PAGES=0
  // runs on 4 KB pages.
  static const std::set<std::string> heavy = {"generate", "train",   "collect", "eval",
                                              "experiment", "analyze", "serve",  "demo"};
  for (int i = 1; i < argc; ++i)
    if (argv[i][0] != '-') {
      if (heavy.count(argv[i])) s0::util::enable_huge_page_heap(argv);
      break;
    }
  CLI::App app{"s0: learn, apply and serve initial recurrent states (S0 tuning) for hybrid LLMs"};
  app.require_subcommand(1);
  struct Command {
    const char* name;
    const char* help;
    s0::cli::Action (*add)(CLI::App&);
  };
  const Command commands[] = {
      {"init-model", "Write a model directory with random weights", s0::cli::add_init_model},
      {"generate", "Generate tokens from a model (optionally with a state set)", s0::cli::add_generate},
      {"tokenize", "Text to token ids with the model's tokenizer.json", s0::cli::add_tokenize},
      {"detokenize", "Token ids to text with the model's tokenizer.json", s0::cli::add_detokenize},
      {"train", "Learn an S0 state set (or a LoRA / state-offset baseline) from JSONL examples, model frozen",
       s0::cli::add_train},
      {"states", "Inspect state-set directories, or export one for llama.cpp", s0::cli::add_states},
      {"lora", "Inspect or merge LoRA adapters (PEFT layout)", s0::cli::add_lora},
      {"collect", "Sample, verify and keep solutions as training data (METHOD.md section 4)", s0::cli::add_collect},
      {"eval", "Greedy pass@1 / pass@k on held-out problems, base vs state sets", s0::cli::add_eval},
      {"check", "Verify completions made elsewhere (human-eval samples JSONL): results file and pass@k", s0::cli::add_check},
      {"experiment", "The full protocol over seeds: collect -> train -> eval, statistics, report", s0::cli::add_experiment},
      {"analyze", "The paper's analyses: persistence, divergence, probe, ablation (JSON + SVG + Markdown)",
       s0::cli::add_analyze},
      {"serve", "OpenAI-compatible HTTP server: one model, state sets chosen per request", s0::cli::add_serve},
      {"demo", "The main job on the built-in default model", s0::cli::add_demo},
      {"launch", "Run an s0 command as N local ranks of a distributed job (torchrun's environment)",
       s0::cli::add_launch},
  };
  std::map<CLI::App*, s0::cli::Action> actions;
  for (const auto& c : commands) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    actions[sub] = c.add(*sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);  // prints help, or the usage error
    return code == 0 ? 0 : 2;  // usage errors: exit status 2
  }
  try {
    // Subcommands that run as ranks of a distributed job (torchrun / `s0 launch`).
    static const std::set<std::string> distributed = {"train", "collect", "eval", "experiment", "demo"};
    for (auto* sub : app.get_subcommands())
      if (actions.count(sub)) {
        if (distributed.count(sub->get_name())) return s0::cli::run_distributed(actions[sub]);
        s0::cli::refuse_distributed(sub->get_name());
        return actions[sub]();
      }
    return 1;
  } catch (const s0::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
