#pragma once
// One function per subcommand: each registers its options on the app and returns the
// action to run when that subcommand is chosen.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace s0::cli {

using Action = std::function<int()>;

// "1,2,3" -> ids; an item that is not an integer is an error naming `flag`.
std::vector<int64_t> parse_id_list(const std::string& s, const std::string& flag);

Action add_init_model(CLI::App& app);
Action add_generate(CLI::App& app);
Action add_demo(CLI::App& app);
Action add_tokenize(CLI::App& app);
Action add_detokenize(CLI::App& app);
Action add_train(CLI::App& app);
Action add_states(CLI::App& app);
Action add_lora(CLI::App& app);
Action add_collect(CLI::App& app);
Action add_eval(CLI::App& app);
Action add_check(CLI::App& app);
Action add_experiment(CLI::App& app);
Action add_analyze(CLI::App& app);
Action add_serve(CLI::App& app);
Action add_launch(CLI::App& app);

// Runs `action` as one rank of a distributed job when the environment describes one
// (WORLD_SIZE > 1: torchrun, `s0 launch`), else plainly (cmd_launch.cpp).
int run_distributed(const Action& action);
// Throws s0::Error when WORLD_SIZE > 1 asks a subcommand that has no distributed form to run.
void refuse_distributed(const std::string& name);

}  // namespace s0::cli
