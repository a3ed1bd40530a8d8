"""DDAD: backbones, losses, discrepancy formulas, ASR-Net, and a short end-to-end training run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from mood_detector.cli import main
from mood_detector.detector import load_detector
from mood_detector.inference.predictor import PredictConfig, Predictor
from mood_detector.models.ddad.asr import ASRNet, focal_loss, partner_indices, synthesise
from mood_detector.models.ddad.detector import DDADDetector, DDADOptions, export_variant, to_network
from mood_detector.models.ddad.networks import (ENTROPY_WEIGHT, Reconstruction, ReconstructionNet,
                                                addressing_entropy, reconstruction_loss)
from mood_detector.models.ddad.scores import discrepancy, squash
from mood_detector.training.loop import LossLog
from mood_detector.weights import ModelCard
from tests.conftest import blob_volume, save_nifti


# --- backbones -------------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", ["ae", "aeu", "memae"])
def test_backbone_shapes(backbone: str):
    torch.manual_seed(0)
    net = ReconstructionNet(backbone).eval()
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    feat = net.encoder(x)
    assert feat.shape == (3, 64, 4, 4)  # 64 x 4 x 4 = 1024
    convs = [m for m in net.encoder if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (1, 16, (4, 4), (2, 2), (1, 1)), (16, 32, (4, 4), (2, 2), (1, 1)), (32, 64, (4, 4), (2, 2), (1, 1)),
        (64, 64, (4, 4), (2, 2), (1, 1))]
    deconvs = [m for m in net.decoder if isinstance(m, nn.ConvTranspose2d)]
    out_ch = 2 if backbone == "aeu" else 1
    assert [(d.in_channels, d.out_channels) for d in deconvs] == [(64, 64), (64, 32), (32, 16), (16, out_ch)]
    assert all(m.bias is None for m in convs + deconvs)
    assert isinstance(net.decoder[-1], nn.ConvTranspose2d)  # no output activation / BN
    lin = [m for m in net.linear_enc if isinstance(m, nn.Linear)] + \
          [m for m in net.linear_dec if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(1024, 2048), (2048, 16), (16, 2048), (2048, 1024)]
    assert isinstance(net.linear_enc[1], nn.BatchNorm1d) and isinstance(net.linear_dec[1], nn.BatchNorm1d)
    rec = net(x)
    assert rec.mean.shape == (3, 1, 64, 64)
    assert (rec.logvar is not None) == (backbone == "aeu")
    assert (rec.att is not None) == (backbone == "memae")
    if backbone == "aeu":
        assert rec.logvar.shape == (3, 1, 64, 64)
    if backbone == "memae":
        assert rec.att.shape == (3, 25) and net.memory.weight.shape == (25, 16)


def test_aeu_loss_formula():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 4, 4, generator=g)
    mu = torch.randn(2, 1, 4, 4, generator=g)
    logvar = torch.randn(2, 1, 4, 4, generator=g)
    loss, mse = reconstruction_loss(Reconstruction(mu, logvar), x)
    xn, mn, ln = x.numpy().astype(np.float64), mu.numpy().astype(np.float64), logvar.numpy().astype(np.float64)
    expected = np.mean(np.exp(-ln) * (xn - mn) ** 2) + np.mean(ln)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(mse) == pytest.approx(np.mean((xn - mn) ** 2), rel=1e-5)
    # plain AE: the loss is the MSE
    loss_ae, _ = reconstruction_loss(Reconstruction(mu), x)
    assert float(loss_ae) == pytest.approx(np.mean((xn - mn) ** 2), rel=1e-5)


def test_memae_addressing_and_entropy():
    torch.manual_seed(0)
    net = ReconstructionNet("memae").eval()
    mem = net.memory
    z = torch.randn(5, 16)
    read, att = mem(z)
    w = mem.weight.detach().numpy().astype(np.float64)
    logits = z.numpy().astype(np.float64) @ w.T
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(att.detach().numpy(), p, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(read.detach().numpy(), p @ w, rtol=1e-4, atol=1e-6)
    h = float(addressing_entropy(att.detach()))
    assert h == pytest.approx(np.mean(-(p * np.log(p)).sum(1)), rel=1e-5)
    uniform = torch.full((3, 25), 1 / 25)
    assert float(addressing_entropy(uniform)) == pytest.approx(math.log(25), rel=1e-6)
    x = torch.rand(2, 1, 8, 8)
    mu = torch.rand(2, 1, 8, 8)
    loss, mse = reconstruction_loss(Reconstruction(mu, None, uniform[:2]), x)
    assert float(loss) == pytest.approx(float(mse) + ENTROPY_WEIGHT * math.log(25), rel=1e-6)
    assert ENTROPY_WEIGHT == 2e-4


# --- scores ----------------------------------------------------------------------------------------
def test_discrepancy_formulas_on_hand_made_reconstructions():
    # one 1x2 image; K = 3 NDM reconstructions per pixel: [0, 1, 2] and [3, 3, 3]
    ndm = torch.tensor([[0.0, 3.0], [1.0, 3.0], [2.0, 3.0]]).view(3, 1, 1, 1, 2)
    udm = torch.tensor([[4.0, 3.0], [2.0, 5.0], [0.0, 4.0]]).view(3, 1, 1, 1, 2)  # means 2 and 4
    x = torch.tensor([1.5, 1.0]).view(1, 1, 1, 2)
    d = discrepancy(x, ndm, udm)
    # sample std (divisor K-1, torch.std / the authors' code): [0,1,2] -> 1; population would be sqrt(2/3)
    np.testing.assert_allclose(d.intra.flatten().numpy(), [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(d.inter.flatten().numpy(), [abs(2 - 1), abs(4 - 3)], atol=1e-6)
    np.testing.assert_allclose(d.rec.flatten().numpy(), [(1.5 - 1) ** 2, (1 - 3) ** 2], atol=1e-6)
    # AE-U: divide by sigma = sqrt(mean of the K NDM variances): variances [1, 4, 7] -> 4 -> sigma 2
    logvar = torch.log(torch.tensor([1.0, 4.0, 7.0])).view(3, 1, 1, 1, 1).expand(3, 1, 1, 1, 2)
    du = discrepancy(x, ndm, udm, logvar)
    np.testing.assert_allclose(du.intra.flatten().numpy(), [0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(du.inter.flatten().numpy(), [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(du.rec.flatten().numpy(), [0.25 / 4, 4.0 / 4], atol=1e-6)
    assert discrepancy(x, ndm).inter is None
    with pytest.raises(ValueError):
        discrepancy(x, ndm[:1])


def test_squash_is_monotone_into_unit_interval():
    raw = torch.tensor([0.0, 0.5, 1.0, 2.0, 1e6])
    s = squash(raw, 1.0)
    assert float(s[0]) == 0.0 and float(s[2]) == pytest.approx(0.5) and float(s[-1]) < 1.0
    assert bool((s[1:] > s[:-1]).all())


# --- ASR-Net ---------------------------------------------------------------------------------------
def test_focal_loss_matches_hand_computation():
    logits = torch.tensor([[2.0, -1.0], [0.3, 0.1], [-0.5, 1.5]]).T.reshape(1, 2, 1, 3)  # 3 pixels
    target = torch.tensor([[[0, 1, 1]]])
    expected = []
    for (a, b), t in zip([(2.0, -1.0), (0.3, 0.1), (-0.5, 1.5)], [0, 1, 1]):
        p = np.exp([a, b]) / np.exp([a, b]).sum()
        expected.append(-((1 - p[t]) ** 2) * np.log(p[t]))
    assert float(focal_loss(logits, target, gamma=2.0)) == pytest.approx(np.mean(expected), rel=1e-5)
    assert float(focal_loss(logits, target, gamma=0.0)) == pytest.approx(float(F.cross_entropy(logits, target)),
                                                                          rel=1e-5)


def test_asr_layers_and_input_channels():
    net = ASRNet(2)
    convs = [m for m in net.model if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (2, 128, (3, 3)), (128, 128, (3, 3)), (128, 2, (3, 3))]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.model) == 2
    card = ModelCard(detector="ddad", arch="ae", width=0.25, kind="brain", slice_axis=2, size=32, mode="dual",
                     extra={"k": 2, "input_size": 32, "hidden": 32, "asr_mid": 8})
    dual = DDADDetector.build(card).eval()
    assert dual.asr.model[0].in_channels == 2 and len(dual.udm) == 2 and len(dual.ndm) == 2
    intra = DDADDetector.build(ModelCard(**{**card.__dict__, "mode": "intra"})).eval()
    assert intra.asr.model[0].in_channels == 1 and intra.udm == []
    z = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        d = dual.maps(z)
        inp = DDADDetector.asr_input(d, 2)
        assert torch.equal(inp[:, 0:1], d.inter) and torch.equal(inp[:, 1:2], d.intra)  # [inter, intra]
        assert torch.equal(DDADDetector.asr_input(d, 1), d.intra)
    assert set(dual.modules()) == {"ndm0", "ndm1", "udm0", "udm1", "asr"}
    assert set(dual.with_variant("a_inter").modules()) == {"ndm0", "ndm1", "udm0", "udm1"}
    with pytest.raises(ValueError, match="UDM"):
        intra.with_variant("a_inter")
    with pytest.raises(ValueError, match="ASR"):
        dual.with_variant("intra")



def test_asr_rec_adds_the_residual_as_first_channel():
    """``asr_rec``: the ASR-Net gets |x - mu_NDM| (the root of A_rec) before the discrepancy maps, one more input
    channel; a variant whose ASR-Net has another channel count is refused."""
    card = ModelCard(detector="ddad", arch="ae", width=0.25, kind="brain", slice_axis=2, size=32, mode="dual",
                     extra={"k": 2, "input_size": 32, "hidden": 32, "asr_mid": 8, "asr_rec": True})
    dual = DDADDetector.build(card).eval()
    intra = DDADDetector.build(ModelCard(**{**card.__dict__, "mode": "intra"})).eval()
    assert dual.asr.in_channels == 3 and intra.asr.in_channels == 2 and dual.with_rec
    z = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        d = dual.maps(z)
        mu = torch.stack([m(z).mean for m in dual.ndm]).mean(0)
        inp = DDADDetector.asr_input(d, 3, rec=True)
        assert torch.allclose(inp[:, 0:1], (z - mu).abs(), atol=1e-6)
        assert torch.equal(inp[:, 1:2], d.inter) and torch.equal(inp[:, 2:3], d.intra)
        assert torch.equal(DDADDetector.asr_input(d, 2, rec=True)[:, 1:2], d.intra)
        p = dual.score_maps(z)
    assert p.shape == (2, 1, 32, 32) and bool(((p >= 0) & (p <= 1)).all())
    with pytest.raises(ValueError, match="3-channel|2-channel"):
        dual.with_variant("intra")
    assert _opts({"asr_rec": "true"}).asr_rec
    with pytest.raises(ValueError, match="asr_rec"):
        _opts({"asr_rec": "maybe"})

def test_synthesis_patch_and_probability():
    g = torch.Generator().manual_seed(3)
    x = torch.full((6, 1, 32, 32), -1.0)
    x[:, :, 4:28, 4:28] = 0.2
    src = torch.full((6, 1, 32, 32), 0.8)
    img0, t0 = synthesise(x, src, g, probability=0.0)
    assert torch.equal(img0, x) and int(t0.sum()) == 0
    img1, t1 = synthesise(x, src, g, probability=1.0)
    changed = (img1 != x)[:, 0]
    assert bool(t1.any(dim=(1, 2)).all())  # every slice got a patch
    assert torch.equal(changed, t1.bool())  # the target is exactly the changed pixels
    for i in range(6):  # one square-ish box, side 10%-40% of the slice, a single interpolation factor
        rows, cols = torch.nonzero(t1[i], as_tuple=True)
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert int(t1[i].sum()) == h * w and 2 <= max(h, w) <= 14
        alpha = (img1[i, 0][t1[i].bool()] - x[i, 0][t1[i].bool()]) / (src[i, 0] - x[i, 0])[t1[i].bool()]
        assert float(alpha.max() - alpha.min()) < 1e-5 and 0.0 < float(alpha[0]) <= 1.0


def test_partner_slices_come_from_other_volumes_at_similar_positions():
    pos = np.tile(np.linspace(0, 1, 20), 3).astype(np.float32)
    vol = np.repeat(np.arange(3), 20)
    idx = np.arange(60)
    part = partner_indices(pos, vol, np.random.default_rng(0), idx)
    assert (vol[part] != vol[idx]).mean() > 0.9
    assert np.abs(pos[part] - pos[idx]).max() <= 0.16


def test_options_validation_and_defaults():
    assert _opts({}).variant == "intra"
    assert _opts({"unlabeled": "/x"}).variant == "dual"
    o = _opts({})
    assert (o.k, o.input_size, o.ae_epochs, o.ae_batch, o.ae_lr, o.asr_epochs, o.asr_batch, o.asr_lr, o.asr_wd) == \
        (3, 64, 250, 64, 5e-4, 100, 8, 1e-4, 1e-4)
    for bad in ({"backbone": "vae"}, {"variant": "x"}, {"k": "1"}, {"input_size": "40"}, {"nope": "1"}):
        with pytest.raises(ValueError):
            _opts(bad)


def test_to_network_range_and_size():
    x = torch.rand(2, 1, 48, 48)
    z = to_network(x, 64)
    assert z.shape == (2, 1, 64, 64) and float(z.min()) >= -1 and float(z.max()) <= 1
    assert torch.allclose(to_network(torch.zeros(1, 1, 8, 8), 16), torch.full((1, 1, 16, 16), -1.0))


def test_empty_slices_score_zero_and_are_skipped():
    """The slice bank (training, calibration, ASR-Net) holds non-empty slices only, so the networks' output on an
    all-background slice is never constrained: such a slice scores 0 (as in SQUID), and the harness skips it.
    In a generated brain about 40% of the slices along the brain's slice axis are empty, 3-4 times the
    foreground's voxels, so any score there is a false positive that weighs on the pixel AP."""
    from mood_detector.detector import TrainConfig

    cfg = TrainConfig(detector="ddad", size=32, width=0.5,
                      options={"k": "2", "input_size": "32", "hidden": "32", "asr_mid": "8"})
    torch.manual_seed(0)
    det = DDADDetector.build(DDADDetector.card_for(cfg, 1)).eval()
    x = torch.rand(3, 1, 32, 32)
    x[1] = 0.0
    for variant in ("intra", "a_intra", "rec"):
        with torch.no_grad():
            s = det.with_variant(variant).score_slices(x)
        assert float(s.pixel[1].abs().max()) == 0.0, variant
        assert float(s.pixel[0].max()) > 0.0 and float(s.pixel[2].max()) > 0.0, variant
    assert DDADDetector.skip_empty_slices


# --- end to end ------------------------------------------------------------------------------------
def _volumes(d: Path, seeds, lesion: bool = False) -> Path:
    d.mkdir(parents=True)
    for s in seeds:
        v = blob_volume(seed=s)
        if lesion:
            v[12:18, 12:18, 12:18] = 1.0
        save_nifti(d / f"v{s:03d}.nii.gz", v)
    return d


def _opts(values: dict[str, str]) -> DDADOptions:
    from mood_detector.detector import TrainConfig

    return DDADDetector.options(TrainConfig(detector="ddad", options=values))


TINY = ["k=2", "input_size=32", "hidden=64", "asr_mid=8", "ae_epochs=4", "ae_batch=8", "ae_lr=2e-3",
        "asr_epochs=3", "asr_batch=8", "asr_lr=1e-3", "max_slices=48", "ckpt_every=2"]


def test_short_training_cli_predict_and_resume(tmp_path: Path):
    train = _volumes(tmp_path / "train", [100, 101, 102])
    unl = _volumes(tmp_path / "unl", [200, 201], lesion=True)
    out = tmp_path / "w" / "ddad.safetensors"
    args = ["train", "-i", str(train), "-o", str(out), "--detector", "ddad", "--size", "32", "--width", "0.5",
            "--device", "cpu", "--unlabeled", str(unl)] + [a for t in TINY + ["asr_rec=on"] for a in ("--opt", t)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rows = LossLog(tmp_path / "w" / "ddad_run").rows()
    phases = [r["phase"] for r in rows]
    assert phases == [f"{m}{i}" for m in ("ndm", "udm") for i in range(2) for _ in range(4)] + ["asr"] * 3
    for stage in ("ndm0", "ndm1", "udm0", "udm1", "asr"):
        losses = [float(r["loss"]) for r in rows if r["phase"] == stage]
        assert losses[-1] < losses[0], (stage, losses)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["detector"] == "ddad" and card["mode"] == "dual" and card["arch"] == "ae"
    assert card["extra"]["asr_rec"] is True and load_detector(out).asr.in_channels == 3
    assert card["extra"]["unlabeled"] == str(unl) and card["extra"]["n_unlabeled_volumes"] == 2
    assert set(card["extra"]["scales"]) == {"rec", "intra", "inter"}
    keys = load_file(str(out))
    assert {k.split(".")[0] for k in keys} == {"ndm0", "ndm1", "udm0", "udm1", "asr", "extra"}
    assert keys["extra.scales"].shape == (3,) and bool((keys["extra.scales"] > 0).all())

    det = load_detector(out)
    vol = blob_volume((30, 34, 28), seed=7)
    results = {}
    for variant in ("dual", "rec", "a_intra", "a_inter"):
        r = Predictor(det.with_variant(variant), PredictConfig(device="cpu", progress=False, threads=1)).score_volume(vol)
        assert r.pixel.shape == vol.shape and r.pixel.dtype == np.float32
        assert 0.0 <= float(r.pixel.min()) and float(r.pixel.max()) <= 1.0 and 0.0 <= r.sample <= 1.0
        assert r.slice_scores.shape == (32,)
        results[variant] = r
    # the loaded detector itself is the dual one and deterministic in eval mode
    again = Predictor(det, PredictConfig(device="cpu", progress=False, threads=1)).score_volume(vol)
    assert again.sample == results["dual"].sample and np.array_equal(again.pixel, results["dual"].pixel)
    # a saved variant keeps only its networks and scores as with_variant does
    rec_path = export_variant(out, tmp_path / "w" / "rec.safetensors", "rec")
    assert {k.split(".")[0] for k in load_file(str(rec_path))} == {"ndm0", "ndm1", "extra"}
    rec = load_detector(rec_path)
    assert rec.variant == "rec"
    r1 = Predictor(rec, PredictConfig(device="cpu", progress=False, threads=1)).score_volume(vol)
    assert np.array_equal(r1.pixel, results["rec"].pixel)
    with pytest.raises(ValueError):
        export_variant(rec_path, tmp_path / "w" / "x.safetensors", "dual")

    # resume: finished stages are loaded from their checkpoints, so the result is identical
    res2 = CliRunner().invoke(main, args + ["--resume", "-o", str(tmp_path / "w" / "again.safetensors"),
                                            "--run-dir", str(tmp_path / "w" / "ddad_run")])
    assert res2.exit_code == 0, res2.output
    again = load_file(str(tmp_path / "w" / "again.safetensors"))
    assert all(torch.equal(keys[k], again[k]) for k in keys)
    assert len(LossLog(tmp_path / "w" / "ddad_run").rows()) == len(rows)  # no epoch was re-run


def test_interrupted_run_resumes_to_the_same_weights(tmp_path: Path):
    """A run stopped after 2 of 4 epochs per network and resumed equals the uninterrupted run (R_intra: NDM +
    ASR-Net); the stale ASR-Net of the short run is not reused."""
    from mood_detector.detector import TrainConfig, parse_options
    from mood_detector.training.api import train_detector

    train = _volumes(tmp_path / "train", [110, 111])
    base = [t for t in TINY if not t.startswith(("ae_epochs", "asr_epochs"))] + ["asr_epochs=1", "max_slices=24"]

    def run(name: str, epochs: int, resume: bool = False) -> dict[str, torch.Tensor]:
        opts = parse_options(base + [f"ae_epochs={epochs}"])
        cfg = TrainConfig(detector="ddad", size=32, width=0.5, device="cpu", resume=resume, options=opts)
        out = train_detector(train, tmp_path / f"{name}.safetensors", cfg, run_dir=tmp_path / f"{name}_run")
        return load_file(str(out))

    full = run("full", 4)
    run("part", 2)
    resumed = run("part", 4, resume=True)
    assert set(full) == set(resumed) and {k.split(".")[0] for k in full} == {"ndm0", "ndm1", "asr", "extra"}
    for k in full:
        assert torch.allclose(full[k].float(), resumed[k].float(), atol=1e-6), k


@pytest.mark.parametrize("backbone,variant", [("aeu", "a_intra"), ("memae", "rec")])
def test_other_backbones_train_and_score(tmp_path: Path, backbone: str, variant: str):
    from mood_detector.detector import TrainConfig, parse_options
    from mood_detector.training.api import train_detector

    train = _volumes(tmp_path / "train", [120, 121])
    opts = parse_options([t for t in TINY if not t.startswith("ae_epochs")] +
                         ["ae_epochs=2", "max_slices=16", f"backbone={backbone}", f"variant={variant}"])
    cfg = TrainConfig(detector="ddad", size=32, width=0.5, device="cpu", options=opts)
    det = load_detector(train_detector(train, tmp_path / "w.safetensors", cfg))
    assert det.card.arch == backbone and det.variant == variant and det.asr is None
    r = Predictor(det, PredictConfig(device="cpu", progress=False, threads=1)).score_volume(blob_volume(seed=9))
    assert np.isfinite(r.pixel).all() and 0.0 <= r.sample <= 1.0 and float(r.pixel.max()) > 0.0


def test_cli_reports_bad_option_in_one_line(tmp_path: Path):
    train = _volumes(tmp_path / "train", [130, 131])
    res = CliRunner().invoke(main, ["train", "-i", str(train), "-o", str(tmp_path / "w.safetensors"),
                                    "--detector", "ddad", "--opt", "backbone=vae"])
    assert res.exit_code != 0 and "backbone" in res.output and "Traceback" not in res.output
