#pragma once
// The one place that pulls in libtorch for s0: ATen tensors plus the autograd pieces we
// use. <torch/torch.h> costs ~3x the compile time, so it is not used. Anything that
// differs between libtorch 1.13 (Debian) and 2.x (CUDA builds) is wrapped here.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/version.h>

namespace s0 {

using at::Tensor;

// RAII guard disabling autograd recording (torch::NoGradGuard in both versions).
using NoGrad = at::NoGradGuard;

inline bool grad_enabled() { return at::GradMode::is_enabled(); }

}  // namespace s0
