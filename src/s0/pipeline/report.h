#pragma once
// Reports: every Markdown table and SVG chart the pipeline writes or prints, in one place.
//   evaluation  report.md of `s0 eval` (evaluate()): one row per condition
//   experiment  report.md, methods.svg, deltas.svg and alpha_sweep.svg of `s0 experiment`
//   demo        the table `s0 demo` prints
// Everything here only formats: it reads the summaries the pipeline computed (the JSON written
// to summary.json / demo.json) and returns text. Torch-free.
#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace s0::pipeline {

// ------------------------------------------------------------------ numbers as printed

std::string fixed(double v, int decimals = 1);    // printf "%.*f"
std::string percent(double fraction);             // 0.25 -> "25.0%"
std::string plus_minus(double mean, double std);  // "72.0 ± 0.0"
std::string p_value(double p);                    // "0.0794"; below 1e-4 "7.1e-15"

// ------------------------------------------------------------------ Markdown tables

// "| a | b |\n". An empty cell is "|  |", or "| |" with compact_empty.
std::string md_row(const std::vector<std::string>& cells, bool compact_empty = false);
// The rule under a header row: "|---|---|\n".
std::string md_rule(size_t columns);

// ------------------------------------------------------------------ SVG charts

// Round axis ticks: multiples of 1, 2 or 5 x 10^k covering [lo, hi], about `target` of them
// (the first <= lo, the last >= hi).
std::vector<double> nice_ticks(double lo, double hi, int target = 5);

// Any number of series over x, each optionally with error bars (+- err), dashed, with or
// without point markers; a linear or log10 y axis (log: points <= 0 are left out, ticks at
// powers of ten); round ticks on both axes; an optional dashed horizontal baseline.
struct ChartSeries {
  std::string name;  // legend entry (no legend for a single series)
  std::vector<double> x, y, err;
  bool dashed = false, markers = true;
};
struct ChartOptions {
  std::string title, xlabel, ylabel;
  bool log_y = false;
  bool has_baseline = false;
  double baseline = 0;
  std::string baseline_label = "base";
  std::string point_label;  // point tooltips "<point_label> <x>: <y>" (empty: the series name)
  int x_decimals = 3;       // in point tooltips
};
std::string svg_series_chart(const std::vector<ChartSeries>& series, const ChartOptions& opt);

// Standalone SVG documents (640 x 360): bars above/below zero, labelled with their values;
// a line with error bars over x and a dashed baseline (svg_series_chart's one-series case).
// `errors` (optional, one per bar): a +-error whisker on each bar (0: none).
std::string svg_bar_chart(const std::string& title, const std::vector<std::string>& labels,
                          const std::vector<double>& values, const std::string& unit,
                          const std::vector<double>& errors = {});
std::string svg_line_chart(const std::string& title, const std::vector<double>& x, const std::vector<double>& y,
                           const std::vector<double>& err, double baseline, const std::string& xlabel,
                           const std::string& ylabel);

// ------------------------------------------------------------------ reports

// report.md of evaluate(), from its summary (summarize() + "meta").
std::string evaluation_report(const nlohmann::json& summary);

// The experiment's report.md and charts, from its summary.json (run_experiment()).
// `sandboxed`: code ran under bubblewrap.
std::string experiment_report(const nlohmann::json& summary, bool sandboxed);
std::string experiment_deltas_chart(const nlohmann::json& summary);  // deltas.svg
std::string experiment_alpha_chart(const nlohmann::json& summary);   // alpha_sweep.svg
// methods.svg: mean greedy pass@1 of the base and of every condition (each method at each of its
// alphas/scales), with the std over seeds as whiskers.
std::string experiment_methods_chart(const nlohmann::json& summary);

// The analyses (analysis.h): a Markdown section (a "## " heading, prose, tables, the chart
// as an image at `svg_path`) and the SVG chart for each of "persistence", "divergence",
// "probe", "ablation_layers", "ablation_size".
std::string analysis_section(const std::string& name, const nlohmann::json& result, const std::string& svg_path);
std::string analysis_chart(const std::string& name, const nlohmann::json& result);

// What `s0 demo` prints, from its demo.json (run_demo()) and where that file is.
std::string demo_report(const nlohmann::json& demo, const std::string& demo_json_path);

}  // namespace s0::pipeline
