"""SQUID: shapes, Gumbel shrinkage, the FIFO memory queue, the masked shortcut, training and prediction, the final
BatchNorm recompute and the residual slice score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mood_detector.detector import REGISTRY, TrainConfig, detector_class, load_detector
from mood_detector.inference.predictor import PredictConfig, Predictor
from mood_detector.models.squid.detector import SQUIDDetector, SquidOptions, mixed_slices
from mood_detector.models.squid.inpaint import InpaintBlock, neighbour_tokens, patchify, position_code, unpatchify
from mood_detector.models.squid.memory import MemoryQueue, gumbel_shrinkage
from mood_detector.models.squid.networks import Discriminator, GeneratorOutput, SquidGenerator
from mood_detector.training.api import train_detector
from mood_detector.training.data import VolumeStore
from mood_detector.training.loop import LossLog
from mood_detector.weights import read_card
from tests.conftest import blob_volume, save_nifti

TINY = {"queue_slots": "8", "mem_slots": "8", "calib_slices": "8"}


def _opts(values: dict[str, str]) -> SquidOptions:
    return SQUIDDetector.options(TrainConfig(detector="squid", options=values))


def test_patch_grid_round_trip_and_order():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    p = patchify(x, 2)
    assert p.shape == (8, 1, 4, 4)
    assert torch.equal(p[1], x[0, :, :4, 4:])  # position 1 = top-right
    assert torch.equal(p[2], x[0, :, 4:, :4])  # position 2 = bottom-left
    assert torch.equal(unpatchify(p, 2), x)


def test_shapes_paper_widths_and_tiny_forward():
    torch.manual_seed(0)
    with torch.device("meta"):  # the paper's widths, shapes only (no memory, no compute)
        g = SquidGenerator(width=1.0).eval()
        feats, skips = g.encode(torch.rand(1, 1, 128, 128))
        assert g(torch.rand(2, 1, 128, 128)).recon.shape == (2, 1, 128, 128)
    assert g.filters == [32, 64, 128, 256, 512]
    assert feats.shape == (4, 512, 4, 4)  # 2x2 patches of 64^2, 512 x 4 x 4 each
    assert [s.shape[1:] for s in skips] == [(128, 16, 16), (256, 8, 8)]
    assert g.inpaint.dim == 2048 and g.inpaint.queue.memory.shape == (4, 200, 2048)
    assert g.inpaint.attention.num_heads == 8 and g.inpaint.ff[0].out_features == 512
    assert g.inpaint.code.shape == (4, 3)
    assert [m.memory.shape for m in g.student.memories] == [(4, 200, 256 * 16), (4, 200, 128 * 64)]
    small = SquidGenerator(width=0.0625, queue_slots=8, mem_slots=8).train()
    out = small(torch.rand(3, 1, 128, 128))
    assert out.recon.shape == out.teacher.shape == (3, 1, 128, 128)
    assert 0.0 <= float(out.recon.detach().min()) and float(out.recon.detach().max()) <= 1.0
    assert out.dist.ndim == 0 and float(out.dist.detach()) > 0
    d = Discriminator()
    assert d(out.recon).shape == (3,)
    convs = [m for m in d.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 128, 128] and all(c.stride == (2, 2) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in d.features) == 4


def test_gumbel_shrinkage_keeps_exactly_k_and_passes_gradient_to_all():
    torch.manual_seed(1)
    logits = torch.randn(6, 50, requires_grad=True)
    w = gumbel_shrinkage(logits, 5)
    assert torch.equal((w != 0).sum(dim=1), torch.full((6,), 5))
    assert torch.allclose(w.sum(dim=1), torch.ones(6))
    top = logits.detach().topk(5, dim=1).indices
    assert torch.equal(torch.sort((w != 0).nonzero()[:, 1].reshape(6, 5), dim=1).values, torch.sort(top, 1).values)
    soft = torch.softmax(logits.detach(), 1)
    kept = soft.gather(1, top)
    assert torch.allclose(w.detach().gather(1, top), kept / kept.sum(1, keepdim=True), atol=1e-6)
    # backward: the plain softmax's gradient, reaching every item (straight-through)
    g = torch.randn(6, 50)
    (grad,) = torch.autograd.grad((w * g).sum(), logits)
    ref_logits = logits.detach().clone().requires_grad_(True)
    (ref,) = torch.autograd.grad((torch.softmax(ref_logits, 1) * g).sum(), ref_logits)
    assert torch.allclose(grad, ref, atol=1e-6)
    assert bool((grad != 0).all())


def test_queue_is_fifo_per_position_and_drops_the_oldest():
    q = MemoryQueue(positions=2, slots=5, dim=3)

    def batch(ids):  # item i at position p holds 10 * i + p
        return torch.tensor([[[10.0 * i + p] * 3 for p in range(2)] for i in ids])

    q.push(batch([0, 1, 2]))
    assert int(q.filled) == 3 and q.items(0)[:, 0].tolist() == [0, 10, 20]
    q.push(batch([3, 4, 5]))
    q.push(batch([6, 7, 8]))  # 9 items into 5 slots: 0..3 dropped, oldest first
    assert int(q.filled) == 5
    assert q.items(0)[:, 0].tolist() == [40, 50, 60, 70, 80]
    assert q.items(1)[:, 0].tolist() == [41, 51, 61, 71, 81]
    q.push(batch(range(9, 16)))  # a batch larger than the queue: only its newest 5 survive
    assert q.items(0)[:, 0].tolist() == [110, 120, 130, 140, 150]
    assert not any(True for _ in q.parameters())  # a buffer, never learned
    assert {"memory", "ptr", "filled"} <= set(q.state_dict())


def test_queue_is_filled_with_detached_training_features_after_commit():
    torch.manual_seed(2)
    block = InpaintBlock(channels=32, size=4, grid=2, slots=10, k=3).train()
    x = torch.rand(2 * 4, 32, 4, 4, requires_grad=True)
    before = block.queue.memory.clone()
    block(x).sum().backward()
    assert torch.equal(block.queue.memory, before)  # nothing is enqueued before the optimiser step
    block.commit()
    feats = block.reduce(x).reshape(2, 4, -1).detach()
    assert int(block.queue.filled) == 2 and not block.queue.memory.requires_grad
    for p in range(4):
        assert torch.allclose(block.queue.items(p), feats[:, p], atol=1e-6)


def test_neighbours_on_the_2x2_patch_grid_are_padded_3x3_windows():
    tokens = torch.arange(1, 5, dtype=torch.float32).reshape(1, 4, 1)  # positions 0..3 hold 1..4
    nb = neighbour_tokens(tokens, 2)[0, :, :, 0]
    assert nb.shape == (4, 8)
    # top-left patch: right (2), below (3) and diagonal (4) neighbours, five zero-padded tokens
    assert nb[0].tolist() == [0, 0, 0, 0, 2, 0, 3, 4]
    assert nb[3].tolist() == [1, 2, 0, 3, 0, 0, 0, 0]
    assert position_code(4).tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]]


def test_masked_shortcut_only_in_training():
    torch.manual_seed(3)
    block = InpaintBlock(channels=32, size=4, grid=2, slots=10, k=3, ratio=0.5)
    x = torch.rand(4 * 4, 32, 4, 4)
    block.train()
    torch.manual_seed(4)
    mixed = block(x)
    inpainted = block.inpaint(x)  # same batch statistics, no randomness inside
    from_inpaint = torch.isclose(mixed, inpainted).all(dim=1)
    from_input = torch.isclose(mixed, x).all(dim=1)
    assert bool((from_inpaint | from_input).all()) and bool(from_input.any()) and bool(from_inpaint.any())
    block.eval()
    a, b = block(x), block(x)
    assert torch.equal(a, b) and torch.equal(a, block.inpaint(x)) and not torch.allclose(a, x)
    gen = SquidGenerator(width=0.0625, size=64, queue_slots=4, mem_slots=4).eval()
    img = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(gen(img).recon, gen(img).recon)


def test_options_are_validated_and_lr_defaults_to_the_papers():
    with pytest.raises(ValueError, match="unknown squid option"):
        _opts({"topkk": "5"})
    with pytest.raises(ValueError, match="pixel_map"):
        _opts({"pixel_map": "edges"})
    with pytest.raises(ValueError, match="slice_signal"):
        _opts({"slice_signal": "mean"})
    for q in ("0", "1.5"):
        with pytest.raises(ValueError, match="slice_quantile"):
            _opts({"slice_quantile": q})
    with pytest.raises(ValueError, match="final_bn"):
        _opts({"final_bn": "maybe"})
    opts = _opts({"slice_signal": "disc", "slice_quantile": "0.9", "final_bn": "0"})
    assert (opts.slice_signal, opts.slice_quantile, opts.final_bn) == ("disc", 0.9, False)
    assert SquidOptions().final_bn and SquidOptions().slice_signal == "residual"
    assert SQUIDDetector.options(TrainConfig()).lr == 1e-4  # without --lr: the paper's
    assert SQUIDDetector.options(TrainConfig(lr=3e-4)).lr == 3e-4
    assert SQUIDDetector.options(TrainConfig(lr=1e-3)).lr == 1e-3  # an explicit --lr equal to another default
    assert SQUIDDetector.options(TrainConfig(options={"lr": "2e-5"})).lr == 2e-5
    with pytest.raises(ValueError, match="once"):
        SQUIDDetector.options(TrainConfig(lr=1e-3, options={"lr": "2e-5"}))
    assert detector_class("squid") is SQUIDDetector and "squid" in REGISTRY


def _train_dir(root: Path, n: int = 2) -> Path:
    d = root / "train"
    d.mkdir()
    for i in range(n):
        save_nifti(d / f"{i:05d}.nii.gz", blob_volume(seed=200 + i))
    return d


def test_train_resume_and_predict_end_to_end(tmp_path: Path):
    d = _train_dir(tmp_path)
    # size 64 (2x2 patches of 32^2) keeps the test fast on a loaded CPU; the shapes test covers 128
    kw = dict(detector="squid", kind="brain", size=64, width=0.0625, batch_size=2, device="cpu",
              max_batches_per_pair=2, options=TINY)
    out = train_detector(d, tmp_path / "a.safetensors", TrainConfig(epochs=2, **kw))
    rows = LossLog(tmp_path / "a_run").rows()
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for r in rows:
        assert all(np.isfinite(float(r[k])) for k in ("loss", "recon", "teacher", "dist", "adv", "d_loss"))
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["detector"] == "squid" and card["size"] == 64 and card["extra"]["topk"] == 5
    assert card["extra"]["logit_std"] > 0 and card["extra"]["tau_residual"] > 0 and card["extra"]["tau_slice"] > 0
    assert card["extra"]["final_bn"] is True and "bn_recomputed" in card["extra"]
    assert card["extra"]["slice_signal"] == SquidOptions().slice_signal
    det = load_detector(out)
    assert int(det.gen.inpaint.queue.filled) > 0  # the queue travelled with the weights
    assert float(det.stats[0]) == pytest.approx(card["extra"]["logit_mean"])
    # resume: one epoch, then continue to two = the uninterrupted run
    train_detector(d, tmp_path / "b.safetensors", TrainConfig(epochs=1, **kw))
    b = train_detector(d, tmp_path / "b.safetensors", TrainConfig(epochs=2, resume=True, **kw))
    ta, tb = det.state_tensors(), load_detector(b).state_tensors()
    assert all(torch.allclose(ta[k].float(), tb[k].float(), atol=1e-5) for k in ta)
    # scoring through the common predictor; empty slices score 0
    vol = np.zeros((32, 32, 32), np.float32)
    vol[4:28, 4:28, 8:24] = blob_volume((24, 24, 16), seed=7)
    pred = Predictor(det, PredictConfig(device="cpu", batch_size=16, progress=False))
    res = pred.score_volume(vol)
    assert res.pixel.shape == vol.shape and 0.0 <= res.pixel.min() and res.pixel.max() <= 1.0
    assert 0.0 <= res.sample <= 1.0 and len(res.slice_scores) == 64
    empty = ~np.moveaxis(pred_input(vol), 2, 0).reshape(64, -1).any(axis=1)
    assert empty.any() and np.all(res.slice_scores[empty] == 0.0) and np.all(res.slice_scores[~empty] > 0.0)
    # the other slice score, switched at inference: both are calibrated
    det.slice_signal = "residual" if det.slice_signal == "disc" else "disc"
    other = pred.score_volume(vol)
    assert np.all(other.slice_scores[empty] == 0.0) and np.all(other.slice_scores[~empty] > 0.0)
    assert not np.allclose(other.slice_scores, res.slice_scores) and np.allclose(other.pixel, res.pixel)
    det.slice_signal = det.opts.slice_signal
    # the gradient-weighted map also works inside the predictor's inference mode
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(pred_input(vol), 2, 0)[28:32]))[:, None]
    with torch.inference_mode():
        plain = det.score_slices(x)
        det.pixel_map = "gradres"
        weighted = det.score_slices(x)
    assert torch.allclose(plain.slice, weighted.slice) and not torch.allclose(plain.pixel, weighted.pixel)
    assert weighted.pixel.shape == (4, 64, 64)
    assert 0.0 <= float(weighted.pixel.min()) <= float(weighted.pixel.max()) <= 1.0


def pred_input(vol: np.ndarray) -> np.ndarray:
    """The predictor's network input for ``vol``: normalised and resampled to 64^3."""
    from mood_detector.preprocess import normalise_intensity, resample

    return resample(normalise_intensity(vol), (64,) * 3)


class _ZeroGenerator(torch.nn.Module):
    """A stand-in generator whose reconstruction is all zeros, so the residual map equals the input."""

    def forward(self, x: torch.Tensor) -> GeneratorOutput:
        return GeneratorOutput(torch.zeros_like(x), torch.zeros_like(x), x.new_zeros(()))


def test_pixel_map_keeps_residual_order_after_the_evaluators_float16_cast():
    """The MOOD evaluator (and mood_detector.evaluation) reads pixel maps as float16: the [0, 1] map of the
    residual must keep residuals of 1 ... 32 tau apart there (``1 - exp(-r / tau)`` rounds everything above
    ~7.6 tau to 1.0, so a strong anomaly ties with every strong normal edge)."""
    det = SQUIDDetector.build(SQUIDDetector.card_for(TrainConfig(detector="squid", size=64, width=0.0625,
                                                              options=TINY), 1))
    tau = 0.02
    det.stats = torch.tensor([0.0, 1.0, tau, tau, tau])
    det.gen = _ZeroGenerator()
    det.eval()
    levels = tau * 2.0 ** torch.arange(6)  # 1, 2, 4, ..., 32 tau
    x = torch.zeros(1, 1, 64, 64)
    for i, v in enumerate(levels):
        x[0, 0, 8 * i:8 * i + 8, 8:16] = v
    with torch.no_grad():
        pixel = det.score_slices(x).pixel[0, 8 * torch.arange(6) + 4, 12]
    as_read = pixel.numpy().astype(np.float16).astype(np.float64)
    assert np.all(np.diff(as_read) > 0), as_read
    assert pixel[0] == pytest.approx(0.5, abs=1e-6)  # r = tau maps to one half


def _tiny_detector(**options: str) -> SQUIDDetector:
    det = SQUIDDetector.build(SQUIDDetector.card_for(TrainConfig(detector="squid", size=64, width=0.0625,
                                                              options={**TINY, **options}), 2))
    return det.eval()


def test_final_bn_recomputes_statistics_over_mixed_batches_and_refills_the_queue(tmp_path: Path):
    """After "training" on one (dim) volume the running statistics follow it; the recompute replaces them by the
    equal-weight average over batches that mix both volumes (what ``update_bn`` computes), in the generator and
    in the discriminator (on the reconstructions), and refills the queue with inference-mode features."""
    d = tmp_path / "vols"
    d.mkdir()
    save_nifti(d / "a.nii.gz", blob_volume(seed=1))
    # other statistics: the percentile normalisation maps both volumes' peaks to 1, so b differs in contrast
    # (mostly dark), and it is moved along axis 0 so that its slices can be told apart (object lower down)
    save_nifti(d / "b.nii.gz", np.roll(blob_volume(seed=2) ** 6, 8, axis=0))
    store = VolumeStore(sorted(d.iterdir()), 64, 2)
    torch.manual_seed(0)
    det = _tiny_detector()
    gen, disc = det.gen, det.disc
    dim = torch.from_numpy(store.slices(1).astype(np.float32))[:, None]
    dim = dim[dim.flatten(1).amax(1) > 0][::4][:8]
    gen.train()
    disc.train()
    with torch.no_grad():
        for _ in range(30):  # momentum 0.1: the statistics are those of the dim volume
            disc(gen(dim).recon)
    gen.inpaint._pending = None
    conv, bn = gen.inc.conv1[0], gen.inc.conv1[1]
    dconv, dbn = disc.features[:3], disc.features[3]
    drift = bn.running_mean.clone()
    rng_state = torch.get_rng_state()

    det.recompute_bn_store(store, batch_size=4, seed=3, batches=6)

    assert torch.equal(torch.get_rng_state(), rng_state)  # the shortcut masks drew from a forked generator

    pool = mixed_slices(store, 24, 3)  # the slices the recompute used, in its order
    rows = torch.arange(pool.shape[2], dtype=torch.float32)[:, None]
    com = (pool[:, 0] * rows).sum((1, 2)) / pool[:, 0].sum((1, 2)).clamp(min=1e-6)  # centre along axis 0
    assert len(pool) == 24 and bool((com < 33).any()) and bool((com > 36).any())  # both volumes
    assert not (gen.training or disc.training)
    with torch.no_grad():
        feats = [conv(patchify(c, 2)) for c in pool.split(4)]
        d_feats = [dconv(gen(c).recon) for c in pool.split(4)]
    for layer, fs in ((bn, feats), (dbn, d_feats)):
        mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in fs]).mean(0)
        var = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in fs]).mean(0)
        assert torch.allclose(layer.running_mean, mean, rtol=1e-4, atol=1e-6)
        assert torch.allclose(layer.running_var, var, rtol=1e-4, atol=1e-6)
    assert float((drift - bn.running_mean).abs().max()) > 1e-2  # the dim volume's statistics are gone
    # queue: the inference-mode bottleneck features of the first queue_slots mixed slices, in order
    block = gen.inpaint
    with torch.no_grad():
        f = block.reduce(gen.encode(pool[:8])[0]).reshape(8, block.positions, block.dim)
    assert int(block.queue.filled) == 8
    for p in range(block.positions):
        assert torch.allclose(block.queue.items(p), f[:, p], atol=1e-5)
    assert "mixed" in det.card.extra["bn_recomputed"]


class _NormalGenerator(torch.nn.Module):
    """A hand-made stand-in for a well-trained generator: it always reconstructs the same normal slice."""

    def __init__(self, normal: torch.Tensor) -> None:
        super().__init__()
        self.normal = normal

    def forward(self, x: torch.Tensor) -> GeneratorOutput:
        recon = self.normal.expand_as(x).clone()
        return GeneratorOutput(recon, recon, x.new_zeros(()))


def test_residual_slice_score_ranks_a_planted_bright_square_above_the_clean_slice():
    det = _tiny_detector(slice_signal="residual")
    assert det.slice_signal == "residual"
    normal = torch.from_numpy(blob_volume((64, 64, 64), seed=5)[:, :, 32]).clone()
    fg = normal > 0
    det.gen = _NormalGenerator(normal[None, None])
    det.stats = torch.tensor([0.0, 1.0, 0.02, 0.02, 0.02])
    gen = torch.Generator().manual_seed(0)
    clean = (normal + 0.02 * torch.rand(64, 64, generator=gen) * fg).clamp(0, 1)  # scan noise
    planted = clean.clone()
    planted[28:36, 28:36] = (planted[28:36, 28:36] + 0.5).clamp(max=1)  # a bright square inside the head
    assert bool(fg[28:36, 28:36].all())
    x = torch.stack([clean, planted])[:, None]
    with torch.no_grad():
        s = det.score_slices(x).slice
        assert float(s[0]) < 0.5 < float(s[1])  # below tau_slice for the noise, far above it with the square
        det.slice_signal = "disc"  # the paper's score only sees the reconstruction, here identical for both
        d = det.score_slices(x).slice
    assert float(d[0]) == pytest.approx(float(d[1]))


def test_save_and_load_keep_the_options_and_statistics(tmp_path: Path):
    det = _tiny_detector(slice_signal="disc", slice_quantile="0.9", final_bn="0", pixel_map="gradres")
    det.stats = torch.tensor([0.1, 2.0, 0.03, 0.04, 0.05])
    path = det.save(tmp_path / "squid.safetensors")
    back = load_detector(path)
    assert (back.opts.slice_signal, back.opts.slice_quantile, back.opts.final_bn) == ("disc", 0.9, False)
    assert (back.slice_signal, back.pixel_map) == ("disc", "gradres")
    assert torch.equal(back.stats, det.stats)
    # weights from before the option (no slice_signal in the card, four statistics) keep the paper's score
    det.stats = det.stats[:4]
    old = det.save(tmp_path / "old.safetensors")
    card_path = old.with_suffix(".json")
    card = json.loads(card_path.read_text())
    for key in ("slice_signal", "slice_quantile", "final_bn"):
        card["extra"].pop(key)
    card_path.write_text(json.dumps(card))
    assert "slice_signal" not in read_card(old).extra
    back = load_detector(old)
    assert back.slice_signal == "disc" and back.stats.shape == (5,) and torch.equal(back.stats[:4], det.stats)
