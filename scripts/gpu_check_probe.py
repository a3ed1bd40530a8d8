"""Helpers of scripts/gpu_check.sh: small checks and one-line summaries of the package CLI's outputs.

Each subcommand prints one line (the result column of gpu_check.sh's table) and exits 0 on success, 1 on
failure:

  env [--need-cuda]             torch, the device, and the imports the check needs
  dist --expect nccl|gloo       under torchrun: the backend the package picks for this rank's device, then a
                                process group of that backend, an all_reduce and a barrier
  losslog RUN_DIR               the training run's loss log: epochs, last loss (finite), slices/s
  speed JSON                    benchmark-speed's --json: the I/O floor against predict pixel / sample
  adapt LOG                     a predict log: what the fine-tune or --adapt auto did and its measured share

Not part of the package: the package does not import it.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import re
import sys
from pathlib import Path


def cmd_env(args: argparse.Namespace) -> int:
    import torch

    missing = []
    for name in ("mood_detector", "nibabel", "isal", "nilearn", "click", "scipy", "safetensors", "pytest"):
        if importlib.util.find_spec(name) is None:  # found, not imported: nilearn alone takes seconds
            missing.append(name)
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        dev = (f"{torch.cuda.device_count()} CUDA device(s): {p.name} (cc {p.major}.{p.minor}, "
               f"{p.total_memory / 2**30:.0f} GiB), bf16 {'yes' if torch.cuda.is_bf16_supported() else 'NO'}")
    else:
        dev = "no CUDA device"
    line = f"python {sys.version.split()[0]}, torch {torch.__version__}, {dev}"
    if missing:
        print(f"{line}; missing packages: {', '.join(missing)}")
        return 1
    if args.need_cuda and not torch.cuda.is_available():
        print(f"{line}; the GPU check needs one (use --dry-run without a GPU)")
        return 1
    if args.need_cuda and not torch.cuda.is_bf16_supported():
        print(f"{line}; bf16 autocast needs a GPU that supports bf16")
        return 1
    print(line)
    return 0


def cmd_dist(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed as dist

    from mood_detector import distributed

    env = distributed.env_from_environ()
    device = distributed.device_for_rank("auto", env)
    backend = distributed.backend_for(device)
    if backend != args.expect:
        print(f"the package picks {backend} for {device}, expected {args.expect}")
        return 1
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, init_method="env://", rank=env.rank, world_size=env.world_size)
    try:
        t = torch.full((4,), float(env.rank + 1), device=device)
        dist.all_reduce(t)
        want = env.world_size * (env.world_size + 1) / 2
        if device.type == "cuda":
            dist.barrier(device_ids=[device.index or 0])
            torch.cuda.synchronize(device)
        else:
            dist.barrier()
        ok = bool(torch.all(t == want))
    finally:
        dist.destroy_process_group()
    print(f"{backend} on {device}, WORLD_SIZE={env.world_size}: all_reduce {'ok' if ok else 'WRONG'}, barrier ok")
    return 0 if ok else 1


def cmd_losslog(args: argparse.Namespace) -> int:
    path = Path(args.run_dir) / "loss_log.csv"
    if not path.is_file():
        print(f"no loss log at {path}")
        return 1
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print(f"{path}: no epochs logged")
        return 1
    losses = [float(r["loss"]) for r in rows]
    batches = sum(int(r["batches"]) for r in rows)
    last = rows[-1]
    finite = all(math.isfinite(v) for v in losses)
    print(f"{batches} batches in {len(rows)} epoch(s), last epoch loss {losses[-1]:.4f}"
          f"{'' if finite else ' (NOT FINITE)'}, {float(last['slices_per_s']):.1f} slices/s")
    return 0 if finite else 1


def cmd_speed(args: argparse.Namespace) -> int:
    raw = json.loads(Path(args.json).read_text())["raw"]
    h = raw["header"]
    floor = raw["floor"]["read"] + raw["floor"]["write"]
    walls = raw["walls"]
    net = raw["timings"].get("network", 0.0)
    ratio = {k: v / floor if floor else float("inf") for k, v in walls.items()}
    print(f"{h['n']} x {h['shape']} on {h['device']}, batch {h['batch']}: I/O floor {floor:.2f} s, "
          f"predict pixel {walls['pixel']:.2f} s ({ratio['pixel']:.2f}x floor), "
          f"sample {walls['sample']:.2f} s ({ratio['sample']:.2f}x), network {net:.2f} s")
    return 0


ADAPT_LINES = [
    re.compile(r"--adapt finetune: (\d+ steps) of the \w+ task on (\d+ slices) \(last loss ([-\d.naif]+)\)"),
    re.compile(r"--adapt auto: (fine-tuning|no fine-tune): adapting would take (?:at least )?([\d.]+ s) against a "
               r"budget of ([\d.]+ s)"),
    re.compile(r"--adapt auto: (no adaptation for \d+ inputs) \(it needs at least (\d+)\)"),
    re.compile(r"(adaptation|deciding on adaptation) took ([\d.]+ s), (\d+%) of the ([\d.]+ s) spent scoring "
               r"(\d+) inputs"),
]


def cmd_adapt(args: argparse.Namespace) -> int:
    text = Path(args.log).read_text(errors="replace")
    parts = []
    for m in (p.search(text) for p in ADAPT_LINES):
        if m is None:
            continue
        g = m.groups()
        if m.re is ADAPT_LINES[0]:
            parts.append(f"fine-tune {g[0]} on {g[1]}, last loss {g[2]}")
        elif m.re is ADAPT_LINES[1]:
            parts.append(f"auto: {g[0]} (estimate {g[1]}, budget {g[2]})")
        elif m.re is ADAPT_LINES[2]:
            parts.append(f"auto: {g[0]}")
        else:
            parts.append(f"{g[0]} {g[1]} = {g[2]} of {g[3]} scoring {g[4]} inputs")
    scored = re.search(r"scored (\d+), skipped (\d+), failed (\d+)", text)
    if scored:
        parts.append(f"scored {scored.group(1)}, failed {scored.group(3)}")
    wanted = {"finetune": (ADAPT_LINES[0], ADAPT_LINES[3]), "auto": ()}[args.mode]
    auto_ok = args.mode != "auto" or any(p.search(text) for p in ADAPT_LINES[1:3])
    ok = bool(scored) and scored.group(3) == "0" and all(p.search(text) for p in wanted) and auto_ok
    print("; ".join(parts) if parts else "no adaptation lines in the log")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("env")
    p.add_argument("--need-cuda", action="store_true")
    p.set_defaults(fn=cmd_env)
    p = sub.add_parser("dist")
    p.add_argument("--expect", choices=["nccl", "gloo"], required=True)
    p.set_defaults(fn=cmd_dist)
    p = sub.add_parser("losslog")
    p.add_argument("run_dir")
    p.set_defaults(fn=cmd_losslog)
    p = sub.add_parser("speed")
    p.add_argument("json")
    p.set_defaults(fn=cmd_speed)
    p = sub.add_parser("adapt")
    p.add_argument("mode", choices=["finetune", "auto"])
    p.add_argument("log")
    p.set_defaults(fn=cmd_adapt)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
