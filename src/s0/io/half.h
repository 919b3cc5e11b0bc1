#pragma once
// bfloat16 / IEEE float16 <-> float32 conversions (bit patterns as uint16_t). Pure integer
// arithmetic: results do not depend on the FPU rounding mode or -ffast-math.
#include <bit>
#include <cstdint>

namespace s0::io {

// float32 -> bfloat16, round to nearest even; NaN stays NaN (quiet bit set), +-inf preserved,
// overflow rounds to inf.
inline constexpr uint16_t f32_to_bf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) {
    return static_cast<uint16_t>((x >> 16) | 0x0040u);  // NaN: keep sign/top payload, quiet
  }
  const uint32_t lsb = (x >> 16) & 1u;
  return static_cast<uint16_t>((x + 0x7fffu + lsb) >> 16);
}

inline constexpr float bf16_to_f32(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

// IEEE binary16 -> float32 (exact: subnormals normalized, inf/NaN payload preserved).
inline constexpr float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits = 0;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);  // normal: rebias 15 -> 127
  } else if (mant == 0) {
    bits = sign;  // +-0
  } else {
    // Subnormal: value = mant * 2^-24. Shift until the implicit bit appears.
    uint32_t e = 113;  // exponent field of 2^-14 (127 - 14)
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mant & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

// float32 -> IEEE binary16, round to nearest even (including into subnormals); overflow -> inf;
// NaN stays NaN (quiet).
inline constexpr uint16_t f32_to_f16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  uint32_t x = bits & 0x7fffffffu;
  if (x >= 0x7f800000u) {  // inf or NaN
    const uint16_t nan =
        x > 0x7f800000u ? static_cast<uint16_t>(0x0200u | ((x >> 13) & 0x3ffu)) : 0;
    return static_cast<uint16_t>(sign | 0x7c00u | nan);
  }
  if (x >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (x >= 0x38800000u) {
    // Normal half (>= 2^-14): rebias exponent (-112 << 23) and round the 13 dropped bits.
    const uint32_t odd = (x >> 13) & 1u;
    x += 0xc8000fffu + odd;
    return static_cast<uint16_t>(sign | (x >> 13));
  }
  // Subnormal half (or zero): result = round(value / 2^-24).
  const uint32_t exp = x >> 23;
  if (exp < 102) return sign;  // < 2^-25 (at most half the smallest subnormal): rounds to 0
  const uint32_t mant = (x & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126 - exp;  // 14..24
  uint32_t r = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (r & 1u))) ++r;  // may carry into the smallest normal
  return static_cast<uint16_t>(sign | r);
}

}  // namespace s0::io
