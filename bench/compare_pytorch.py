#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Step overhead of zo's MeZO and SPSA against the MeZO reference implementation's parameter loop.

Optional: needs PyTorch (Debian: apt install python3-torch) and a Release build of zo's
bench/bench_optimizers. Both sides use the same parameter shapes (two OPT-125m decoder layers,
14.2 million floats), the same number of threads, and no model: the objective is free, so what is
timed is what each optimizer adds to the two forward passes of a step.

The reference loop, as the MeZO trainer runs it for every parameter tensor:
  perturb(+1), [forward], perturb(-2), [forward], perturb(+1), update
where each perturb re-seeds the generator and, per tensor, draws z = torch.normal(...) into a
fresh tensor and assigns param.data = param.data + scale * z * eps, and the update draws z once
more and assigns param.data = param.data - lr * (g * z + wd * param.data) (no decay for biases
and layer norms). That is four passes that each generate the direction, with allocations.
zo's SPSA step (Rademacher directions, zo::spsa) is listed against the same loop: it is the step a
user who wants the cheapest central-difference estimate would take instead.

Usage: bench/compare_pytorch.py --zo-bench build/bench/bench_optimizers [--threads 2]
Prints the medians (over alternating rounds of both sides) and the ratio of step overheads,
measured in this one run.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time


def opt_layer_shapes(layers=2, d=768, ffn=3072):
    shapes = []
    for l in range(layers):
        p = f"layers.{l}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes.append((p + name + ".weight", (d, d)))
            shapes.append((p + name + ".bias", (d,)))
        shapes += [(p + "fc1.weight", (ffn, d)), (p + "fc1.bias", (ffn,)),
                   (p + "fc2.weight", (d, ffn)), (p + "fc2.bias", (d,))]
        for name in ("self_attn_layer_norm", "final_layer_norm"):
            shapes.append((p + name + ".weight", (d,)))
            shapes.append((p + name + ".bias", (d,)))
    return shapes


def reference_step_seconds(torch, params, steps, eps=1e-3, lr=1e-9, wd=0.0):
    """Median seconds of one reference MeZO step (estimate + update) without forward passes."""

    def perturb(seed, scale):
        torch.manual_seed(seed)
        for _, p in params:
            z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device,
                             dtype=p.data.dtype)
            p.data = p.data + scale * z * eps

    def update(seed, g):
        torch.manual_seed(seed)
        for name, p in params:
            z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device,
                             dtype=p.data.dtype)
            if "bias" not in name and "layer_norm" not in name:
                p.data = p.data - lr * (g * z + wd * p.data)
            else:
                p.data = p.data - lr * (g * z)

    times = []
    for k in range(steps + 2):
        start = time.perf_counter()
        seed = 1000 + k
        perturb(seed, 1)
        loss1 = 1.0
        perturb(seed, -2)
        loss2 = 0.999
        projected_grad = (loss1 - loss2) / (2 * eps)
        perturb(seed, 1)
        update(seed, projected_grad)
        if k >= 2:  # the first steps warm up the allocator
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def zo_step_seconds(binary, threads, names):
    """Median seconds of zo's steps from bench_optimizers' JSON output."""
    pattern = "^(" + "|".join(names) + f")/threads:{threads}/"
    out = subprocess.run([binary, f"--benchmark_filter={pattern}", "--benchmark_repetitions=5",
                          "--benchmark_report_aggregates_only=true", "--benchmark_format=json"],
                         check=True, capture_output=True, text=True).stdout
    result = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("aggregate_name") == "median":
            scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
            result[b["run_name"].split("/")[0]] = b["real_time"] * scale
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zo-bench", required=True, help="path to zo's bench_optimizers")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="reference steps timed per round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of reference and zo measurements")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit("compare_pytorch.py needs PyTorch: apt install python3-torch")
    torch.set_num_threads(args.threads)
    params = [(name, torch.nn.Parameter(torch.full(shape, 0.01))) for name, shape in
              opt_layer_shapes()]
    count = sum(p.numel() for _, p in params)

    # The two sides take turns, so that load from elsewhere on a shared machine falls on both.
    zo_names = ["mezo", "mezo_fused", "mezo_arithmetic_fused", "spsa", "spsa_arithmetic_fused"]
    rounds = [(reference_step_seconds(torch, params, args.steps),
               zo_step_seconds(args.zo_bench, args.threads, zo_names)) for _ in range(args.rounds)]
    reference = statistics.median(r for r, _ in rounds)
    zo_times = {name: statistics.median(z[name] for _, z in rounds) for name in zo_names}

    print(f"parameters: {count:,} in {len(params)} tensors; threads: {args.threads}; "
          f"torch {torch.__version__}")
    print(f"{'optimizer':32} {'median step overhead':>22} {'ns/parameter':>13} "
          f"{'reference / zo':>16}")
    print(f"{'MeZO reference loop (PyTorch)':32} {reference * 1e3:19.1f} ms "
          f"{reference * 1e9 / count:13.2f} {1.0:16.2f}")
    for name in zo_names:
        t = zo_times[name]
        print(f"{'zo ' + name:32} {t * 1e3:19.1f} ms {t * 1e9 / count:13.2f} {reference / t:16.2f}")


if __name__ == "__main__":
    main()
