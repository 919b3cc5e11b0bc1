#!/usr/bin/env python3
"""Where the main thread's serial time in a decode step goes, from a perf profile.

A decode step's work runs in parallel regions (OpenMP, entered through GOMP_parallel); what
the main thread does outside them (ATen calls, allocation, the regions' fork and join, the
sampler) is time the other threads wait. This script reads `perf script` output with call
chains and, for the thread that runs main(), counts the samples taken inside
CausalLM::decode_step, the share of them outside any GOMP_parallel frame, and that serial
share by the innermost two s0 functions on the stack and the library the sample fell in.

    perf record -D 7000 -e cpu-clock -F 2000 --call-graph dwarf,16384 -o /tmp/perf.data \\
        build/bench_engine --arch falcon_h1 --preset 0.5b --dtype bf16 --threads 2 \\
        --batches 1 --steps 100 --repeats 1 --prompt-len 8 > /dev/null
    perf script -i /tmp/perf.data -F tid,ip,sym,dso > /tmp/perf.script
    python3 tools/perf_serial.py /tmp/perf.script [TOP]

(-D skips the model's set-up; dwarf call graphs, since libgomp and libtorch have no frame
pointers. libgomp samples whose GOMP_parallel frame could not be unwound show up as serial
time "in libgomp": mostly the regions' fork and join.)
"""
import collections
import re
import sys


def read_samples(path):
    samples, cur = [], None
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if cur:
                    samples.append(cur)
                cur = None
            elif not line.startswith("\t"):  # a sample's header: its thread id first
                cur = {"tid": line.split()[0], "frames": []}
            elif cur is not None:
                cur["frames"].append(line.strip())
    if cur:
        samples.append(cur)
    return samples


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    samples = read_samples(sys.argv[1])
    main_tid = next((s["tid"] for s in samples if any(re.search(r"\bmain \(", f) for f in s["frames"])), None)
    if main_tid is None:
        sys.exit("perf_serial: no sample has main() on its stack (recorded without call graphs?)")
    by_place = collections.Counter()
    step = serial = 0
    for s in samples:
        frames = s["frames"]
        if s["tid"] != main_tid or not any("decode_step" in f for f in frames):
            continue
        step += 1
        if any("GOMP_parallel" in f for f in frames):
            continue
        serial += 1
        s0 = [re.sub(r"\(.*", "", f.split(" ", 1)[1].replace("(anonymous namespace)", "{anon}"))[:70]
              for f in frames if "s0::" in f][:2]
        m = re.search(r"\(([^()]*)\)\s*$", frames[0]) if frames else None
        lib = m.group(1).split("/")[-1] if m else "?"
        by_place[" <- ".join(s0) + "  [" + lib + "]"] += 1
    if step == 0:
        sys.exit("perf_serial: no main-thread sample inside decode_step")
    print(f"main thread {main_tid}: {step} samples in decode_step, {serial} outside parallel regions "
          f"({100.0 * serial / step:.1f}%)")
    for place, n in by_place.most_common(top):
        print(f"{100.0 * n / step:6.2f}%  {place}")


if __name__ == "__main__":
    main()
