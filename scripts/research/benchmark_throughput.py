#!/usr/bin/env python3
"""Training and inference throughput (slices/s) of the FPI network, printed as a table.

Times the real code paths on synthetic FPI batches (no files involved): a training step is
``fpi_pair`` + forward + loss + backward + Adam step, an inference step is ``FPIDetector.score_slices``
under ``torch.inference_mode`` (bf16 autocast on CUDA, as in the predictor).

    python scripts/research/benchmark_throughput.py --kind brain --width 1 --device cpu
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from mood_detector.detector import TrainConfig, resolve_device
from mood_detector.models.fpi.detector import FPIDetector
from mood_detector.tasks.fpi import fpi_pair
from mood_detector.training.loop import autocast


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="brain", choices=["brain", "abdom"], help="network plan and slice size")
    ap.add_argument("--size", type=int, default=None, help="slice size (default: the kind's size)")
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier (1 = full model)")
    ap.add_argument("--mode", default="discrete", choices=["discrete", "continuous"])
    ap.add_argument("--batch-size", type=int, default=32, help="slices per training / inference batch")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per measurement (after 1 warm-up)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = TrainConfig(kind=args.kind, size=args.size, width=args.width, device=str(device),
                      options={"mode": args.mode})
    det = FPIDetector.build(FPIDetector.card_for(cfg, 0)).to(device)
    n_params = sum(p.numel() for p in det.net.parameters())
    task = FPIDetector.task_config(det.card)
    size, half = det.size, max(1, args.batch_size // 2)
    a = torch.rand(half, size, size, device=device)
    b = torch.rand(half, size, size, device=device)
    opt = torch.optim.Adam(det.net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)

    def train_step() -> None:
        batch = fpi_pair(a, b, task, g)
        x = batch.images
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        with autocast(device, True):
            logits = det.net(x)
        FPIDetector.loss(logits, batch.labels).backward()
        opt.step()

    x_inf = torch.rand(args.batch_size, 1, size, size, device=device)

    def infer_step() -> None:
        with torch.inference_mode(), autocast(device, True):
            det.score_slices(x_inf)

    rows = []
    for name, fn, per_step, train in (("train", train_step, 2 * half, True), ("inference", infer_step,
                                                                              args.batch_size, False)):
        det.net.train(train)
        fn()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            fn()
        _sync(device)
        secs = time.perf_counter() - t0
        rows.append((name, per_step * args.steps / secs, secs / args.steps))
    print(f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}), "
          f"threads={torch.get_num_threads()}, torch={torch.__version__}")
    print(f"model: fpi {args.kind} width={args.width} mode={args.mode} params={n_params:,} slice={size}x{size} "
          f"batch={args.batch_size}")
    print(f"| phase | slices/s | s/batch |\n|---|---:|---:|")
    for name, rate, spb in rows:
        print(f"| {name} | {rate:.2f} | {spb:.3f} |")


if __name__ == "__main__":
    main()
