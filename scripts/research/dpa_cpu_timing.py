"""CPU cost of one DPA training run, measured on a few batches (for choosing a CPU-budget recipe).

Times, in CPU seconds of this process (``time.process_time``; run with ``OMP_NUM_THREADS=1`` so that it is one
core's time, independent of how busy the machine is), one optimiser step of

* the ``fpi-vgg19`` feature pre-training (VGG19 up to the feature layer + 1x1 head, FPI batch) and
* the DPA autoencoder at every growth resolution (AE forward/backward, frozen extractor on x and on x^),

for each candidate ``res:nf:layer``, and counts the training batches / slices of the given volumes at each
``res`` (non-empty slices along the kind's slice axis, and those the ``min_mean`` rule keeps). The epoch cost is
then ``slices x seconds per slice``. Nothing is trained to convergence: a few steps per setting.

    OMP_NUM_THREADS=1 python scripts/research/dpa_cpu_timing.py --volumes data/brain --kind brain \\
        --candidates 64:128:r22,64:64:r22,128:32:r22 --batch-size 8 --steps 2
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def cpu_step_seconds(step, steps: int) -> float:
    """Mean CPU seconds of ``step()`` over ``steps`` calls after one warm-up call."""
    step()
    t0 = time.process_time()
    for _ in range(steps):
        step()
    return (time.process_time() - t0) / steps


def time_pretrain(res: int, layer: str, batch: int, steps: int) -> float:
    from mood_detector.models.dpa.features import make_extractor
    from mood_detector.tasks.fpi import CLASS_VALUES, FPIConfig, fpi_pair, labels_to_classes

    ext = make_extractor("random-vgg19", layer)
    ext.set_trainable(True)
    with torch.no_grad():
        ch = ext(torch.zeros(1, 1, res, res), layer).shape[1]
    head = nn.Conv2d(ch, len(CLASS_VALUES), 1)
    opt = torch.optim.Adam(list(ext.parameters()) + list(head.parameters()), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    task = FPIConfig(mode="discrete", core=0.5, equal_tol=0.0)
    a, b = torch.rand(batch // 2, res, res), torch.rand(batch // 2, res, res)

    def step() -> None:
        fb = fpi_pair(a, b, task, gen)
        logits = F.interpolate(head(ext(fb.images, layer)), size=(res, res), mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits.float(), labels_to_classes(fb.labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return cpu_step_seconds(step, steps)


def time_dpa(res: int, max_res: int, nf: int, layer: str, batch: int, steps: int, fade: bool) -> float:
    from mood_detector.models.dpa.features import make_extractor
    from mood_detector.models.dpa.loss import PerceptualLoss
    from mood_detector.models.dpa.network import ProgressiveAE, mix_resolution

    ext = make_extractor("random-vgg19", layer).freeze()
    lyr = ext.shallower(layer, int(math.log2(max_res // res)))
    prev = ext.shallower(layer, int(math.log2(max_res // res)) + 1) if fade else None
    ae = ProgressiveAE(max_res, nf, 128)
    loss_fn = PerceptualLoss(ext, "none")  # the statistics cost nothing per step
    opt = torch.optim.Adam(ae.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, res, res)
    alpha = 0.5 if fade else 1.0

    def step() -> None:
        xm = mix_resolution(x, alpha)
        y = ae(xm, res, alpha)
        loss = loss_fn.progressive(xm, y, lyr, prev, alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return cpu_step_seconds(step, steps)


def count_slices(volumes: Path, kind: str, res: int, batch_size: int, min_mean: float) -> dict[str, float]:
    """Per volume: non-empty slices, loader batches, and slices kept by ``min_mean`` at ``res``."""
    from mood_detector.kinds import get_kind
    from mood_detector.models.dpa.detector import keep_mask
    from mood_detector.training.data import VolumeStore

    files = sorted(volumes.glob("*.nii*"))
    t0 = time.process_time()
    store = VolumeStore(files, res, get_kind(kind).slice_axis, 1.0)
    nonempty = batches = kept = 0
    for i in range(len(store)):
        a = store.slices(i)
        ne = a.reshape(len(a), -1).max(1) > 0
        nonempty += int(ne.sum())
        batches += math.ceil(int(ne.sum()) / batch_size)
        kept += int(keep_mask(torch.from_numpy(a[ne].astype(np.float32))[:, None], min_mean).sum())
    n = len(files)
    return {"volumes": n, "nonempty": nonempty / n, "batches": batches / n, "kept": kept / n,
            "load_s": (time.process_time() - t0) / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volumes", type=Path, help="training volumes to count slices on (optional)")
    ap.add_argument("--kind", default="brain")
    ap.add_argument("--candidates", default="64:128:r22,64:64:r22,128:32:r22",
                    help="comma list of max_res:nf:feature_layer")
    ap.add_argument("--batch-size", type=int, default=8, help="slices per timed step")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per setting (after one warm-up)")
    ap.add_argument("--loader-batch", type=int, default=32, help="--batch-size of the planned training run")
    ap.add_argument("--min-mean", type=float, default=0.06)
    ap.add_argument("--skip-low", action="store_true", help="time only max_res (not the growth stages)")
    ap.add_argument("--count-only", action="store_true", help="only count the slices of --volumes")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch threads {torch.get_num_threads()}, timed batch {args.batch_size}, {args.steps} steps each; "
          "CPU seconds per slice")
    cands = [c.split(":") for c in args.candidates.split(",")]
    if args.volumes:
        for res in sorted({int(c[0]) for c in cands}):
            c = count_slices(args.volumes, args.kind, res, args.loader_batch, args.min_mean)
            print(f"slices at {res}: {c['volumes']} volumes, per volume {c['nonempty']:.1f} non-empty, "
                  f"{c['batches']:.2f} batches of {args.loader_batch}, {c['kept']:.1f} kept (min_mean "
                  f"{args.min_mean}); load+resample {c['load_s']:.2f} CPU s per volume", flush=True)
    for res_s, nf_s, layer in ([] if args.count_only else cands):
        res, nf = int(res_s), int(nf_s)
        pre = time_pretrain(res, layer, args.batch_size, args.steps) / args.batch_size
        print(f"res {res} layer {layer}: fpi-vgg19 pre-training {pre:.4f} s/slice", flush=True)
        stages = [res] if args.skip_low else [r for r in (8, 16, 32, 64, 128) if r <= res]
        for r in stages:
            for fade in ((False, True) if r > 8 and not args.skip_low else (False,)):
                s = time_dpa(r, res, nf, layer, args.batch_size, args.steps, fade) / args.batch_size
                print(f"res {res} nf {nf} layer {layer}: DPA step at r{r}{' (fade)' if fade else ''} "
                      f"{s:.4f} s/slice", flush=True)


if __name__ == "__main__":
    main()
