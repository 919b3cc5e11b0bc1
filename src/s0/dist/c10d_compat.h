#pragma once
// The c10d headers s0 uses, in one place (included only by dist.cpp: they are heavy). The API
// used (TCPStore(host, TCPStoreOptions), PrefixStore, ProcessGroupGloo(store, rank, size,
// Options) with Options::create / devices / createDeviceFor*, allgather + Work::wait) exists
// unchanged in libtorch 1.13 and 2.x; a difference between versions goes here.
//
// ProcessGroupGloo.hpp declares its class only under USE_C10D_GLOO (the define libtorch itself
// is built with; Debian's 1.13 and the PyTorch wheels ship Gloo), and includes the Gloo
// headers (<gloo/...>: Debian package libgloo-dev, matching libtorch's libgloo0).
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif

#include <ATen/ATen.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
