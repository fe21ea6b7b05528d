#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Fine-tunes the pretrained sentence encoder all-MiniLM-L6-v2 (22.7 M parameters, loaded offline
with Hugging Face transformers) on the fortune-category data set (build_dataset.py), with a
classification head on the mean-pooled embedding, through zo's Python package zo_torch.

    finetune.py run --method M --budget N ...   one method, one process: writes M.json
    finetune.py timing --steps N ...            every step kind in turn on one batch: timing.json
    finetune.py report --out DIR JSON...        the table (results.md) and the plot (accuracy.png)

Methods: mezo, lozo-m, loho (zo_torch), adam (torch.optim, first order) and inference (forward
passes only, the memory baseline). Every run also reports the zero-shot nearest-centroid accuracy
(the class centroids of the frozen embeddings), which is where each fine-tuning run starts: the
head is initialised at those centroids. scripts/minilm.sh runs it all (12 min on 2 cores; its
--short mode 92 s).
"""

import argparse
import hashlib
import json
import math
import os
import resource
import statistics
import subprocess
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder; never reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import zo_torch  # noqa: E402

MAX_TOKENS = 64  # fortunes are cut here: most fit, and a forward's cost grows with the length
HEAD_SCALE = 20.0  # logits are 20 x cosine: softmax is neither flat nor saturated at the start
ZO_METHODS = ("mezo", "lozo-m", "loho")


# --- Data and model ---------------------------------------------------------------------------

def read_jsonl(path, limit=None):
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    return rows[:limit] if limit else rows


def tokenize(tokenizer, rows):
    """Token ids per text (cut at MAX_TOKENS) and the labels: tokenised once, batched later."""
    ids = tokenizer([r["text"] for r in rows], truncation=True, max_length=MAX_TOKENS)["input_ids"]
    return ids, torch.tensor([r["label"] for r in rows])


def collate(ids, labels, index):
    """A padded batch of the examples at index (padding id 0, as BERT's tokenizer pads)."""
    length = max(len(ids[i]) for i in index)
    tokens = torch.zeros(len(index), length, dtype=torch.long)
    mask = torch.zeros(len(index), length, dtype=torch.long)
    for row, i in enumerate(index):
        tokens[row, :len(ids[i])] = torch.tensor(ids[i])
        mask[row, :len(ids[i])] = 1
    return tokens, mask, labels[list(index)]


class Classifier(torch.nn.Module):
    """The encoder, mean pooling over the real tokens (as the sentence-transformers model does),
    L2 normalisation, and a linear head: head(x) = W x + b over the unit embedding."""

    def __init__(self, encoder, classes):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, classes)

    def embed(self, tokens, mask):
        hidden = self.encoder(input_ids=tokens, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1)
        return F.normalize(pooled, dim=-1)

    def forward(self, tokens, mask):
        return self.head(self.embed(tokens, mask))


def load(args):
    """The model with its head at the class centroids, the tokenised data and the zero-shot
    (nearest-centroid) held-out accuracy."""
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(args.threads or os.cpu_count())
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    # No pooler: the sentence encoder mean-pools the last hidden states, and BERT's pooler
    # (a dense layer over [CLS]) would only cost time and parameters.
    encoder = AutoModel.from_pretrained(args.model, add_pooling_layer=False)
    # Dropout off for every method: a zeroth-order difference needs the same function at +eps
    # and -eps, and Adam is run the same way so that only the optimizer differs.
    encoder.eval()
    train = tokenize(tokenizer, read_jsonl(Path(args.data) / "train.jsonl", args.train_limit))
    test = tokenize(tokenizer, read_jsonl(Path(args.data) / "test.jsonl", args.test_limit))
    classes = int(max(train[1].max(), test[1].max())) + 1
    model = Classifier(encoder, classes)

    # Centroids of the frozen unit embeddings: the zero-shot classifier, and the head's start
    # (W = scale * unit centroid, b = 0), so every method starts at the zero-shot accuracy; a
    # zero or random head would spend the zeroth-order budget on finding what the centroids give.
    with torch.no_grad():
        embeddings = torch.cat([model.embed(*collate(*train, batch)[:2])
                                for batch in chunks(range(len(train[0])), 32)])
        centroids = torch.stack([embeddings[train[1] == c].mean(0) for c in range(classes)])
        model.head.weight.copy_(HEAD_SCALE * F.normalize(centroids, dim=-1))
        model.head.bias.zero_()
    zero_shot = accuracy(model, test)
    return model, train, test, zero_shot


def chunks(items, size):
    items = list(items)
    return [items[i:i + size] for i in range(0, len(items), size)]


def accuracy(model, data):
    """Held-out accuracy, batches of 32, no autograd."""
    ids, labels = data
    correct = 0
    with torch.no_grad():
        for batch in chunks(range(len(ids)), 32):
            tokens, mask, y = collate(ids, labels, batch)
            correct += int((model(tokens, mask).argmax(-1) == y).sum())
    return correct / len(ids)


def batches(count, batch, seed):
    """Training batches: epochs of a seeded shuffle, the same for every method."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(count, generator=generator).tolist()
        for start in range(0, count - batch + 1, batch):
            yield order[start:start + batch]


def parameter_digest(model):
    digest = hashlib.sha256()
    for _, p in model.named_parameters():
        digest.update(p.detach().numpy().tobytes())
    return digest.hexdigest()


# --- Memory -------------------------------------------------------------------------------------

def resident_bytes(field):
    """VmRSS or VmHWM of this process, from /proc/self/status (None without /proc)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak():
    """Resets the process's peak RSS (Linux's clear_refs 5), so that the peak measured is that
    of the training loop, not of loading the model (safetensors' pages and the copy out of them
    briefly hold the weights twice). Returns whether it could."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_bytes():
    hwm = resident_bytes("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- Optimizers ---------------------------------------------------------------------------------

def zo_parameters(model, head_layer=None):
    """named_parameters() for zo_torch. With head_layer, the head's parameters are renamed
    "layer.<head_layer>.head.*": LoHO makes its deepest layers first-order, a layer being the N
    of "layer.N." in a name, and the head (outside every layer) would otherwise be
    zeroth-order."""
    named = []
    for name, p in model.named_parameters():
        if head_layer is not None and name.startswith("head."):
            name = f"layer.{head_layer}.{name}"
        named.append((name, p))
    return named


def make_step(method, model, args, restore=None):
    """(step function taking (tokens, mask, y) and returning the loss, forward passes per
    example of one step, the optimizer). restore overrides args.restore."""
    restore = restore or args.restore
    def closure_of(tokens, mask, y):
        return lambda: F.cross_entropy(model(tokens, mask), y)

    if method == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)

        def step(tokens, mask, y):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(tokens, mask), y)
            loss.backward()
            opt.step()
            return float(loss)
        return step, 1, opt
    if method == "mezo":
        opt = zo_torch.MeZO(zo_parameters(model), lr=args.lr, eps=args.eps, seed=args.seed,
                            restore=restore)
        cost = 2
    elif method == "lozo-m":
        opt = zo_torch.LOZOM(zo_parameters(model), lr=args.lr, eps=args.eps, rank=args.rank,
                             interval=args.interval, beta=args.beta, seed=args.seed,
                             restore=restore)
        cost = 2
    elif method == "loho":
        # The head becomes layer 6 (after BERT's layers 0-5), and first_order_layers=2 makes the
        # head and the last encoder layer first-order (Adam); embeddings and layers 0-4 are MeZO.
        layers = model.encoder.config.num_hidden_layers
        opt = zo_torch.LoHO(zo_parameters(model, head_layer=layers), lr=args.lr, eps=args.eps,
                            fo_lr=args.fo_lr, first_order_layers=args.first_order_layers,
                            seed=args.seed, restore=restore)
        cost = 3  # two zeroth-order forwards and one with autograd
    else:
        raise SystemExit(f"finetune: unknown method {method}")

    def step(tokens, mask, y):
        return float(opt.step(closure_of(tokens, mask, y)))
    return step, cost, opt


def reference_mezo_step(parameters, closure, lr, eps, seed):
    """The reference MeZO step, restated: every perturbation regenerates z from the seed with
    torch.normal, parameter by parameter (four generations per step)."""
    def perturb(scale):
        torch.manual_seed(seed)
        for p in parameters:
            z = torch.normal(mean=0.0, std=1.0, size=p.shape, dtype=p.dtype)
            p.data.add_(z, alpha=scale)

    with torch.no_grad():
        perturb(eps)
        loss_plus = float(closure())
        perturb(-2 * eps)
        loss_minus = float(closure())
        perturb(eps)
        projected_gradient = (loss_plus - loss_minus) / (2 * eps)
        perturb(-lr * projected_gradient)
    return (loss_plus + loss_minus) / 2


# --- Commands -----------------------------------------------------------------------------------

def run(args):
    model, train, test, zero_shot = load(args)
    probe = collate(*train, list(range(min(32, len(train[0])))))

    def probe_loss():
        with torch.no_grad():
            return float(F.cross_entropy(model(probe[0], probe[1]), probe[2]))

    probe_before = probe_loss()
    if args.method == "inference":
        step, cost, opt = None, 1, None
    else:
        step, cost, opt = make_step(args.method, model, args)
    steps = max(1, args.budget // (cost * args.batch))
    evaluations = sorted({round(steps * k / args.evaluations)
                          for k in range(1, args.evaluations + 1)})

    resident_loaded = resident_bytes("VmRSS")
    hwm_reset = reset_peak()
    curve = [{"step": 0, "forward_passes": 0, "train_loss": None, "accuracy": zero_shot}]
    step_seconds, losses, interval = [], [], []
    batch_source = batches(len(train[0]), args.batch, args.seed)
    for index in range(1, steps + 1):
        tokens, mask, y = collate(*train, next(batch_source))
        start = time.perf_counter()
        if step is None:
            with torch.no_grad():
                loss = float(F.cross_entropy(model(tokens, mask), y))
        else:
            loss = step(tokens, mask, y)
        step_seconds.append(time.perf_counter() - start)
        if not math.isfinite(loss):
            raise SystemExit(f"finetune: {args.method} diverged at step {index} (loss {loss})")
        losses.append(loss)
        interval.append(loss)
        if index in evaluations:
            curve.append({"step": index, "forward_passes": index * cost * args.batch,
                          "train_loss": statistics.fmean(interval),
                          "accuracy": accuracy(model, test)})
            interval = []
            print(f"finetune: {args.method} step {index}/{steps}: "
                  f"loss {curve[-1]['train_loss']:.4f}, "
                  f"held-out accuracy {curve[-1]['accuracy']:.3f}", flush=True)
    peak = peak_bytes()

    result = {
        "method": args.method, "restore": args.restore, "lr": args.lr, "eps": args.eps,
        "fo_lr": args.fo_lr,
        "batch": args.batch, "steps": steps, "forward_passes": steps * cost * args.batch,
        "zero_shot_accuracy": zero_shot, "accuracy": curve[-1]["accuracy"], "curve": curve,
        "losses": losses, "probe_loss_before": probe_before, "probe_loss_after": probe_loss(),
        "median_step_seconds": statistics.median(step_seconds),
        "resident_after_load_bytes": resident_loaded, "peak_bytes": peak,
        "peak_reset_after_load": hwm_reset, "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "parameter_digest": parameter_digest(model),
        "train_examples": len(train[0]), "test_examples": len(test[0]),
    }
    if opt is not None and hasattr(opt, "parameter_names"):
        result["zo_parameters"] = len(opt.parameter_names)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


def timing(args):
    """Each step kind in turn on one batch of the same model, args.steps rounds; the medians and
    their ratios are from this one process, so the machine's noise hits them alike."""
    model, train, _, _ = load(args)
    tokens, mask, y = collate(*train, list(range(args.batch)))

    def closure():
        return F.cross_entropy(model(tokens, mask), y)

    # zo's MeZO both ways: exact (its default, a snapshot) and arithmetic (as the reference).
    kinds = {"mezo": make_step("mezo", model, args, "exact")[0],
             "mezo-arithmetic": make_step("mezo", model, args, "arithmetic")[0]}
    for method in ("lozo-m", "loho", "adam"):
        kinds[method] = make_step(method, model, args)[0]
    parameters = [p for p in model.parameters()]
    seconds = {name: [] for name in ("forward", "reference-mezo", *kinds)}
    for round_index in range(args.steps + 1):
        measured = {}
        start = time.perf_counter()
        with torch.no_grad():
            closure()
        measured["forward"] = time.perf_counter() - start
        start = time.perf_counter()
        reference_mezo_step(parameters, closure, args.lr, args.eps, args.seed + round_index)
        measured["reference-mezo"] = time.perf_counter() - start
        for name, step in kinds.items():
            start = time.perf_counter()
            step(tokens, mask, y)
            measured[name] = time.perf_counter() - start
        if round_index > 0:  # the first round warms up (allocations, thread pool)
            for name, value in measured.items():
                seconds[name].append(value)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    forward = medians["forward"]
    result = {
        "rounds": args.steps, "batch": args.batch, "threads": torch.get_num_threads(),
        "median_seconds": medians,
        "forward_share_of_mezo_step": 2 * forward / medians["mezo"],
        "forward_share_of_reference_step": 2 * forward / medians["reference-mezo"],
        "reference_over_zo_mezo": medians["reference-mezo"] / medians["mezo"],
        "reference_over_zo_mezo_arithmetic":
            medians["reference-mezo"] / medians["mezo-arithmetic"],
        "zo_mezo_overhead_seconds": medians["mezo"] - 2 * forward,
        "reference_overhead_seconds": medians["reference-mezo"] - 2 * forward,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


def mib(value):
    return f"{value / 2**20:.0f} MiB"


def report(args):
    """results.md (the table) and accuracy.png (held-out accuracy against forward passes); exits
    non-zero when a method is missing or a check fails."""
    runs = {}
    for path in args.runs:
        result = json.loads(Path(path).read_text())
        runs[Path(path).stem] = result
    problems = [f"no run of {m}" for m in args.require if m not in runs]
    timing_result = json.loads(Path(args.timing).read_text()) if args.timing else None

    inference = runs.get("inference")
    lines = ["| method | held-out accuracy | zero-shot (centroids) | forward passes | steps "
             "| s/step (median) | peak RSS over the loaded model | against inference |",
             "|---|---|---|---|---|---|---|---|"]
    lines.append(f"| nearest centroid (zero-shot) | "
                 f"{100 * next(iter(runs.values()))['zero_shot_accuracy']:.1f}% | | 0 | 0 | | | |")
    for name, r in runs.items():
        if name == "inference" or name.endswith("-repeat"):
            continue
        growth = r["peak_bytes"] - r["resident_after_load_bytes"]
        against = ""
        if inference:
            base = inference["peak_bytes"] - inference["resident_after_load_bytes"]
            difference = (r["peak_bytes"] - inference["peak_bytes"]) / 2**20
            against = f"{difference:+.0f} MiB" if base else ""
        lines.append(f"| {name} | {100 * r['accuracy']:.1f}% | {100 * r['zero_shot_accuracy']:.1f}%"
                     f" | {r['forward_passes']} | {r['steps']} | {r['median_step_seconds']:.3f}"
                     f" | {mib(growth)} | {against} |")
    if inference:
        lines.append(f"| inference (forward only) | | | {inference['forward_passes']} | "
                     f"{inference['steps']} | {inference['median_step_seconds']:.3f} | "
                     f"{mib(inference['peak_bytes'] - inference['resident_after_load_bytes'])}"
                     f" | +0 MiB |")
        lines.append("")
        lines.append(f"Resident after loading the model (before the reset of the peak): "
                     f"{mib(inference['resident_after_load_bytes'])}; inference's peak "
                     f"{mib(inference['peak_bytes'])}.")
    if timing_result:
        t = timing_result["median_seconds"]
        lines += ["", f"Step kinds on one batch of {timing_result['batch']}, "
                  f"{timing_result['rounds']} rounds in one process, medians:", "",
                  "| step | median s | in forward passes | forward share |", "|---|---|---|---|"]
        for name, forwards in (("forward", 1), ("mezo", 2), ("mezo-arithmetic", 2),
                               ("reference-mezo", 2), ("lozo-m", 2), ("loho", 3), ("adam", 1)):
            # The forward share of a step whose evaluations are all plain forwards; LoHO's and
            # Adam's include a backward pass.
            share = ("" if name in ("adam", "loho")
                     else f"{100 * forwards * t['forward'] / t[name]:.0f}%")
            lines.append(f"| {name} | {t[name]:.3f} | {t[name] / t['forward']:.2f} | {share} |")
        lines += ["", f"Reference MeZO step / zo MeZO step: "
                  f"{timing_result['reference_over_zo_mezo']:.2f} (exact), "
                  f"{timing_result['reference_over_zo_mezo_arithmetic']:.2f} (arithmetic)."]
    for name, r in runs.items():
        if not r.get("peak_reset_after_load", True):
            lines.append(f"\n{name}: the peak could not be reset after loading (no writable "
                         f"/proc/self/clear_refs); its peak includes the load.")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    # The plot: one line per method, the zero-shot accuracy as the start of each.
    csv = out / "curves.csv"
    with open(csv, "w") as f:
        f.write("method,forward_passes,accuracy,train_loss\n")
        for name, r in runs.items():
            if name == "inference" or name.endswith("-repeat"):
                continue
            for point in r["curve"]:
                loss = "" if point["train_loss"] is None else f"{point['train_loss']:.6f}"
                f.write(f"{name},{point['forward_passes']},{point['accuracy']:.6f},{loss}\n")
    names = [n for n in runs if n != "inference" and not n.endswith("-repeat")]
    zero_shot = next(iter(runs.values()))["zero_shot_accuracy"]
    plots = ", ".join(f"'{csv}' using 2:(strcol(1) eq '{n}' ? $3 : 1/0) with linespoints "
                      f"title '{n}'" for n in names)
    losses = ", ".join(f"'{csv}' using 2:(strcol(1) eq '{n}' ? $4 : 1/0) with linespoints "
                       f"title '{n}'" for n in names)
    # As the demo's plot (zo-finetune report): held-out accuracy and training loss side by side.
    script = (
        "set datafile separator ','\nset terminal pngcairo size 1200,500 font ',10'\n"
        f"set output '{out / 'accuracy.png'}'\nset multiplot layout 1,2\n"
        "set key below\nset xlabel 'forward passes (examples)'\n"
        "set ylabel 'held-out accuracy'\n"
        "set title 'all-MiniLM-L6-v2 on fortune categories, held-out accuracy'\n"
        f"plot {plots}, {zero_shot} with lines dashtype 2 lc rgb 'gray' "
        "title 'nearest centroid (zero-shot)'\n"
        "set ylabel 'training loss (cross-entropy)'\n"
        "set title 'Training loss, mean over each evaluation interval'\n"
        f"plot {losses}\nunset multiplot\n")
    subprocess.run(["gnuplot"], input=script, text=True, check=True)

    # The checks: a first-order method lowers the loss on a fixed probe batch, every run is
    # finite, and the zo MeZO run repeated with the same seed is the same bit for bit.
    for name, r in runs.items():
        if name in ("adam", "loho") and not r["probe_loss_after"] < r["probe_loss_before"]:
            problems.append(f"{name}: the probe loss did not drop "
                            f"({r['probe_loss_before']:.5f} -> {r['probe_loss_after']:.5f})")
    for name, r in runs.items():
        if name.endswith("-repeat"):
            first = runs.get(name[:-len("-repeat")])
            if first is None:
                problems.append(f"{name} without its first run")
            elif (first["losses"] != r["losses"]
                  or first["parameter_digest"] != r["parameter_digest"]):
                problems.append(f"{name}: not the same run bit for bit as the first")
            else:
                print(f"finetune: {name[:-len('-repeat')]} repeated bit for bit "
                      f"({len(r['losses'])} steps, parameters {r['parameter_digest'][:16]})")
    for problem in problems:
        print("finetune: FAILED:", problem)
    if problems:
        raise SystemExit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "timing", "report"))
    parser.add_argument("runs", nargs="*", help="report: the runs' JSON files")
    parser.add_argument("--model", help="the extracted all-MiniLM-L6-v2 folder")
    parser.add_argument("--data", help="build_dataset.py's output folder")
    parser.add_argument("--method", default="mezo")
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget", type=int, default=16000, help="forward passes (examples)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--eps", type=float, default=1e-3)
    parser.add_argument("--fo-lr", type=float, default=1e-4, help="LoHO's Adam")
    parser.add_argument("--first-order-layers", type=int, default=2,
                        help="LoHO: 2 = the head and the last encoder layer")
    parser.add_argument("--rank", type=int, default=2)
    parser.add_argument("--interval", type=int, default=50)
    parser.add_argument("--beta", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--restore", default="exact", choices=("exact", "arithmetic"),
                        help="zo's restore mode: exact keeps a snapshot (one copy of the "
                             "parameters), arithmetic undoes a perturbation by subtraction")
    parser.add_argument("--evaluations", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timing: rounds")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: every core)")
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--timing", help="report: timing.json")
    parser.add_argument("--require", nargs="*", default=[],
                        help="report: methods that must be there")
    args = parser.parse_args()
    {"run": run, "timing": timing, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
