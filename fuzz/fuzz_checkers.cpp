// Answer checkers over model output (untrusted text): think-block stripping, code
// post-processing, GSM8K number extraction, MATH \boxed{} extraction and equivalence, SQL
// extraction. Input: "completion\n#####\ngold".
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "s0/eval/checkers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto [a, b] = s0::fuzz::split(in, "\n#####\n");
  const std::string completion(a), gold(b);
  s0::fuzz::expect_clean("checkers", [&] {
    (void)s0::eval::strip_think(completion);
    (void)s0::eval::postprocess_code(completion);
    (void)s0::eval::normalize_number(completion);
    (void)s0::eval::extract_gsm8k_answer(completion);
    (void)s0::eval::gsm8k_correct(completion, gold);
    (void)s0::eval::last_boxed(completion);
    (void)s0::eval::normalize_math_answer(completion);
    (void)s0::eval::math_equivalent(completion, gold);
    (void)s0::eval::math_correct(completion, gold);
    (void)s0::eval::extract_sql(completion);
    (void)s0::eval::sql_has_order_by(completion);
  });
  return 0;
}
