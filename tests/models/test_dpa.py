"""Deep Perceptual Autoencoder: network growth, fade-in, loss, VGG19 naming / loading, training, scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from mood_detector.detector import TrainConfig, load_detector
from mood_detector.errors import WeightsError
from mood_detector.inference.predictor import PredictConfig, Predictor
from mood_detector.models.dpa.detector import DPADetector, DPAOptions, growth_schedule
from mood_detector.models.dpa.features import VGG19Features, make_extractor, save_vgg19
from mood_detector.models.dpa.loss import FeatureStats, PerceptualLoss, relative_l1
from mood_detector.models.dpa.network import ProgressiveAE, mix_resolution
from mood_detector.models.dpa.selection import Candidate, SelectionConfig, pick_best, select_dpa
from mood_detector.training.api import train_detector
from mood_detector.training.loop import LossLog
from tests.conftest import blob_volume, save_nifti

# torchvision.models.vgg19().features: conv layers at these indices (ReLUs at +1, max-pools at 4, 9, 18, 27, 36)
TORCHVISION_CONVS = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
TORCHVISION_KEYS = [f"features.{i}.{p}" for i in TORCHVISION_CONVS for p in ("weight", "bias")]
TORCHVISION_OUT = [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]


def test_network_shapes_at_every_growth_stage():
    ae = ProgressiveAE(max_res=32, nf=4, latent_dim=6)
    assert ae.resolutions == [8, 16, 32]
    for r in (8, 16, 32):
        for alpha in (0.0, 0.4, 1.0):
            x = torch.rand(2, 1, r, r)
            z = ae.encoder(x, r, alpha)
            assert z.shape == (2, 6, 1, 1)
            assert ae.decoder(z, r, alpha).shape == (2, 1, r, r)
    with pytest.raises(ValueError):
        ae(torch.rand(1, 1, 64, 64), 64)
    with pytest.raises(ValueError):
        ae.encoder(torch.rand(1, 1, 16, 16), 32)
    # no normalisation layers anywhere, as in the authors' networks
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)) for m in ae.modules())


def test_fade_in_blends_old_and_new_paths():
    torch.manual_seed(0)
    ae = ProgressiveAE(max_res=32, nf=4, latent_dim=6)
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        # alpha = 0: the encoder is the previous stage's network on the 2x2-averaged image
        torch.testing.assert_close(ae.encoder(x, 32, 0.0), ae.encoder(F.avg_pool2d(x, 2), 16, 1.0))
        z = torch.randn(3, 6, 1, 1)
        low = F.interpolate(ae.decoder(z, 16, 1.0), scale_factor=2, mode="nearest")
        high = ae.decoder(z, 32, 1.0)
        torch.testing.assert_close(ae.decoder(z, 32, 0.0), low)
        torch.testing.assert_close(ae.decoder(z, 32, 0.3), 0.7 * low + 0.3 * high)
        assert not torch.allclose(low, high)
    # the input mixture of the paper: alpha 0 = up(down(x)), alpha 1 = x
    torch.testing.assert_close(mix_resolution(x, 0.0), F.interpolate(F.avg_pool2d(x, 2), scale_factor=2))
    torch.testing.assert_close(mix_resolution(x, 0.25), 0.75 * mix_resolution(x, 0.0) + 0.25 * x)
    assert mix_resolution(x, 1.0) is x


def test_relative_perceptual_l1_formula_and_detached_denominator():
    fx = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]]], [[[0.0, 1.0], [-1.0, 2.0]]]], requires_grad=True)
    fy = torch.tensor([[[[0.0, -2.0], [1.0, 1.5]]], [[[1.0, 1.0], [1.0, 1.0]]]], requires_grad=True)
    loss = relative_l1(fx, fy)
    # sample 0: mean|d| = (1 + 0 + 2 + 1) / 4 = 1, mean|fx| = 6.5 / 4 ; sample 1: 4/4 over 4/4
    torch.testing.assert_close(loss.detach(), torch.tensor([4 / 6.5, 1.0]))
    loss.sum().backward()
    den = fx.detach().abs().mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)
    expected = torch.sign(fx.detach() - fy.detach()) / (4 * den)  # numerator only: denominator detached
    torch.testing.assert_close(fx.grad, expected)
    torch.testing.assert_close(fy.grad, -expected)
    # a non-detached denominator would give a different gradient (so the check above can fail)
    fx2 = fx.detach().clone().requires_grad_(True)
    ((fx2 - fy.detach()).abs().mean(dim=(1, 2, 3)) / fx2.abs().mean(dim=(1, 2, 3))).sum().backward()
    assert not torch.allclose(fx2.grad, expected)


def test_progressive_loss_fades_between_levels():
    ext = make_extractor("random-vgg19", "r22")
    loss = PerceptualLoss(ext)
    for key, c in (((16, "r22"), 128), ((8, "r12"), 64)):
        loss.stats[key] = FeatureStats(c)  # identity statistics
    x, y = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    hi = loss.per_sample(x, y, "r22").mean()
    lo = loss.per_sample(F.avg_pool2d(x, 2), F.avg_pool2d(y, 2), "r12").mean()
    torch.testing.assert_close(loss.progressive(x, y, "r22", "r12", 1.0), hi)
    torch.testing.assert_close(loss.progressive(x, y, "r22", "r12", 0.25), 0.25 * hi + 0.75 * lo)
    # normalisation: f^ = (f - mu) / sigma per channel
    s = FeatureStats(3)
    s.update(torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) * torch.arange(4.0).view(1, 1, 2, 2))
    s.finish()
    f = torch.ones(1, 3, 1, 1)
    torch.testing.assert_close(s.normalise(f).flatten(), (1 - s.mean) / s.std)
    torch.testing.assert_close(s.mean, torch.tensor([1.5, 3.0, 4.5]))


def test_vgg19_layer_names_match_torchvision():
    vgg = VGG19Features()
    sd = vgg.state_dict()
    assert list(sd) == TORCHVISION_KEYS
    cin = 3
    for i, cout in zip(TORCHVISION_CONVS, TORCHVISION_OUT):
        assert sd[f"features.{i}.weight"].shape == (cout, cin, 3, 3)
        cin = cout
    assert [i for i, m in enumerate(vgg.features) if isinstance(m, torch.nn.MaxPool2d)] == [4, 9, 18, 27, 36]
    # truncation keeps a prefix of the same names
    assert list(VGG19Features(VGG19Features.depth_for("r32")).state_dict()) == TORCHVISION_KEYS[:12]
    # the layer schedule of progressive growing: one VGG block shallower per halving
    assert [vgg.shallower("r32", k) for k in range(4)] == ["r32", "r22", "r12", "r12"]
    assert vgg.shallower("r44", 1) == "r34" and vgg.shallower("r42", 2) == "r22" and vgg.shallower("p4", 1) == "p3"


def _torchvision_like_state(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out, cin = {}, 3
    for i, cout in zip(TORCHVISION_CONVS, TORCHVISION_OUT):
        if i <= 7:  # the layers the tests use get random values; deeper ones zeros (cheap to make)
            out[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.05
            out[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.05
        else:
            out[f"features.{i}.weight"] = torch.zeros(cout, cin, 3, 3)
            out[f"features.{i}.bias"] = torch.zeros(cout)
        cin = cout
    out["classifier.0.weight"] = torch.zeros(4, 4)  # a full model's state dict also has the classifier
    return out


def test_load_torchvision_state_dict_safetensors_and_pth(tmp_path: Path):
    state = _torchvision_like_state()
    st = tmp_path / "vgg19.safetensors"
    save_file(state, str(st))
    pth = tmp_path / "vgg19_features.pth"  # bare ``vgg19().features.state_dict()``: keys "0.weight", ...
    torch.save({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}, pth)
    for path in (st, pth):
        ext = make_extractor("vgg19", "r22", str(path))
        for k, v in ext.state_dict().items():
            torch.testing.assert_close(v, state[k])
    # semantics: r11 = ReLU(conv1_1) of the grey image repeated to RGB and ImageNet-normalised
    x = torch.rand(2, 1, 12, 12)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ref = F.relu(F.conv2d((x.repeat(1, 3, 1, 1) - mean) / std, state["features.0.weight"],
                          state["features.0.bias"], padding=1))
    torch.testing.assert_close(ext(x, "r11"), ref)
    # round trip through this package's own saver
    back = load_file(str(save_vgg19(ext, tmp_path / "again.safetensors")))
    assert sorted(back) == sorted(ext.state_dict())
    bad = dict(state)
    bad["features.2.weight"] = torch.zeros(64, 64, 5, 5)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsError, match="features.2.weight"):
        make_extractor("vgg19", "r22", str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsError, match="not a torchvision VGG19"):
        save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        make_extractor("vgg19", "r12", str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="feature-weights"):
        make_extractor("vgg19", "r12")


def test_options_are_validated():
    with pytest.raises(ValueError, match="unknown dpa option"):
        DPADetector.options(TrainConfig(detector="dpa", options={"latentdim": "4"}))
    with pytest.raises(ValueError, match="power of two"):
        DPADetector.options(TrainConfig(detector="dpa", options={"max_res": "48"}))
    with pytest.raises(ValueError, match="unknown features"):
        DPADetector.options(TrainConfig(detector="dpa", options={"features": "imagenet"}))
    with pytest.raises(ValueError, match="unknown feature_norm 'raw'"):
        DPADetector.options(TrainConfig(detector="dpa", options={"feature_norm": "raw"}))
    o = DPADetector.options(TrainConfig(detector="dpa", kind="brain", width=0.25))
    assert (o.max_res, o.nf, o.features, o.feature_norm) == (128, 32, "fpi-vgg19", "channel")
    assert DPADetector.options(TrainConfig(detector="dpa", options={"feature_norm": "none"})).feature_norm == "none"
    assert DPADetector.options(TrainConfig(detector="dpa", size=48)).max_res == 32
    sched = growth_schedule(8, 32, 2, 5)
    assert [(p.res, p.epochs, p.fade) for p in sched] == [(8, 2, False), (16, 2, True), (32, 5, True)]
    assert [(p.res, p.epochs, p.fade) for p in growth_schedule(8, 32, 0, 5)] == [(32, 5, False)]
    best = pick_best([Candidate(8, "r12", "a", 0.5, 0.5), Candidate(16, "r22", "b", 0.7, 0.6),
                      Candidate(32, "r22", "c", float("nan"), 0.9), Candidate(64, "r12", "d", 0.7, 0.8)])
    assert best.weights == "b"



def _blob_volumes(folder: Path, n: int, seed: int) -> Path:
    """``n`` small blob volumes (seeds ``seed``, ``seed + 1``, ...) as NIfTI files in ``folder``."""
    folder.mkdir()
    for i in range(n):
        save_nifti(folder / f"{i:05d}.nii.gz", blob_volume(seed=seed + i))
    return folder

def test_short_training_loss_falls_and_scores_through_predictor(tmp_path: Path):
    d = _blob_volumes(tmp_path / "train", 3, seed=20)
    # 3 batches per epoch; the fade covers round(0.5 * 1 * 3) = 2 steps of r16's first epoch
    opts = {"nf": "8", "latent_dim": "16", "max_res": "16", "stage_epochs": "1", "fade": "0.5",
            "feature_layer": "r22", "feature_epochs": "1", "stats_batches": "3", "min_mean": "0.02"}
    cfg = TrainConfig(detector="dpa", kind="brain", size=32, epochs=3, batch_size=8, device="cpu", lr=2e-3,
                      max_batches_per_pair=1, options=opts)
    out = train_detector(d, tmp_path / "w" / "dpa.safetensors", cfg)
    rows = LossLog(tmp_path / "w" / "dpa_run").rows()
    assert [r["phase"] for r in rows] == ["features-fpi", "r8", "r16-fade", "r16", "r16"]
    r16 = [float(r["loss"]) for r in rows if r["phase"].startswith("r16")]
    assert r16[-1] < 0.85 * r16[0]
    tensors = load_file(str(out))
    assert tensors["extra.feat_mean"].shape == tensors["extra.feat_std"].shape == (128,)
    assert "features.features.7.weight" in tensors and "ae.encoder.head.1.weight" in tensors
    det = load_detector(out)
    assert isinstance(det, DPADetector) and det.size == 16 and det.card.extra["features"] == "fpi-vgg19"
    assert det.card.extra["feature_norm"] == "channel" and det.loss.normalised
    assert det.card.extra["score_scale"] > 0 and det.card.extra["pixel_scale"] > 0
    pred = Predictor(det, PredictConfig(device="cpu", progress=False))
    res = pred.score_volume(blob_volume((27, 35, 30), seed=5) * 300.0)  # any shape, any intensity range
    assert res.pixel.shape == (27, 35, 30) and 0.0 <= res.pixel.min() and res.pixel.max() <= 1.0
    assert 0.0 <= res.sample <= 1.0 and res.slice_scores.shape == (16,) and res.pixel.max() > 0.0
    # the documented [0, 1] mapping v / (v + scale); empty slices are not processed (score 0)
    x = torch.zeros(2, 1, 16, 16)
    x[1] = torch.from_numpy(blob_volume((16, 16, 16), seed=1)[:, :, 8])[None]
    s = det.score_slices(x)
    with torch.no_grad():
        raw, raw_pix = det.raw_scores(x[1:])
    torch.testing.assert_close(s.slice[1:], raw / (raw + det.score_scale))
    torch.testing.assert_close(s.pixel[1:], raw_pix / (raw_pix + det.pixel_scale))
    assert float(s.slice[0]) == 0.0 and float(s.pixel[0].abs().max()) == 0.0 and float(s.slice[1]) > 0.0


def test_resume_replays_the_schedule(tmp_path: Path):
    """One final-resolution epoch, then resume to three: identical to the uninterrupted three-epoch run."""
    d = _blob_volumes(tmp_path / "train", 2, seed=30)
    opts = {"nf": "4", "latent_dim": "8", "max_res": "16", "stage_epochs": "1", "features": "random-vgg19",
            "feature_layer": "r12", "stats_batches": "2", "min_mean": "0.02"}
    kw = dict(detector="dpa", kind="brain", size=32, batch_size=8, device="cpu", max_batches_per_pair=1,
              options=opts)
    a = train_detector(d, tmp_path / "a.safetensors", TrainConfig(epochs=3, **kw))
    train_detector(d, tmp_path / "c.safetensors", TrainConfig(epochs=1, **kw))
    c = train_detector(d, tmp_path / "c.safetensors", TrainConfig(epochs=3, resume=True, **kw))
    ta, tc = load_detector(a).state_tensors(), load_detector(c).state_tensors()
    assert all(torch.allclose(ta[k], tc[k]) for k in ta)
    assert len(LossLog(tmp_path / "c_run").rows()) == 2 + 2  # r8 + r16 (1 epoch), then 2 resumed epochs


def test_selection_on_one_type_validation_set(tmp_path: Path):
    from mood_detector.evaluation.testset import TestsetConfig, make_testset

    train, normals = tmp_path / "train", tmp_path / "normals"
    train.mkdir()
    normals.mkdir()
    for i in range(2):
        save_nifti(train / f"{i:05d}.nii.gz", blob_volume(seed=40 + i))
    for i in range(4):
        save_nifti(normals / f"{i:05d}.nii.gz", blob_volume(seed=50 + i))
    man = make_testset(normals, tmp_path / "val", TestsetConfig(types=("uniform_addition",), seed=0))
    assert {c["type"] for c in man["cases"]} == {None, "uniform_addition"}
    base = TrainConfig(kind="brain", size=32, epochs=1, batch_size=8, device="cpu", max_batches_per_pair=1,
                       options={"nf": "4", "max_res": "16", "stage_epochs": "1", "features": "random-vgg19",
                                "stats_batches": "2", "min_mean": "0.02"})
    res = select_dpa(train, tmp_path / "val" / "toy", tmp_path / "val" / "toy_label", tmp_path / "sel", base,
                     SelectionConfig(latent_dims=(4,), feature_layers=("r12", "r22")))
    assert [(c.latent_dim, c.feature_layer) for c in res.candidates] == [(4, "r12"), (4, "r22")]
    assert all(0.0 <= c.sample_ap <= 1.0 for c in res.candidates)
    assert res.best is pick_best(res.candidates)
    assert load_detector(res.best.weights).card.extra["feature_layer"] == res.best.feature_layer
    assert (tmp_path / "sel" / "selection.json").is_file() and "(best)" in res.table()


def test_feature_norm_none_uses_raw_features():
    """``feature_norm=none``: loss, slice score and pixel map are those of the raw features, no statistics."""
    torch.manual_seed(0)
    ext = make_extractor("random-vgg19", "r12")
    x, y = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        fx, fy = ext(x, "r12"), ext(y, "r12")
    # hand-computed relative L1 of the raw features, per sample
    expected = (fx - fy).abs().mean(dim=(1, 2, 3)) / fx.abs().mean(dim=(1, 2, 3))
    raw = PerceptualLoss(ext, "none")
    assert not raw.normalised and raw.stats == {}  # no statistics needed
    torch.testing.assert_close(raw.per_sample(x, y, "r12").detach(), expected)
    torch.testing.assert_close(raw.progressive(x, y, "r12", None).detach(), expected.mean())
    image, pixel = raw.score(x, y, "r12")
    torch.testing.assert_close(image, expected)
    torch.testing.assert_close(pixel, (fx - fy).abs().mean(dim=1))  # r12 has stride 1: no resampling
    # the default normalises: with non-trivial statistics the loss differs, without any it refuses
    norm = PerceptualLoss(ext)
    assert norm.feature_norm == "channel"
    with pytest.raises(KeyError, match="no feature statistics"):
        norm.per_sample(x, y, "r12")
    norm.stats[(16, "r12")] = FeatureStats(64)
    norm.stats[(16, "r12")].update(fx)
    norm.stats[(16, "r12")].finish()
    assert not torch.allclose(norm.per_sample(x, y, "r12").detach(), expected)
    with pytest.raises(ValueError, match="unknown feature_norm"):
        PerceptualLoss(ext, "batch")


def test_feature_norm_none_is_saved_loaded_and_scored(tmp_path: Path):
    d = _blob_volumes(tmp_path / "train", 2, seed=60)
    opts = {"nf": "4", "latent_dim": "8", "max_res": "16", "stage_epochs": "1", "features": "random-vgg19",
            "feature_layer": "r12", "feature_norm": "none", "stats_batches": "2", "min_mean": "0.02"}
    cfg = TrainConfig(detector="dpa", kind="brain", size=32, epochs=1, batch_size=8, device="cpu",
                      max_batches_per_pair=1, options=opts)
    out = train_detector(d, tmp_path / "w" / "dpa.safetensors", cfg)
    assert not any(k.startswith("extra.") for k in load_file(str(out)))  # no statistics saved
    det = load_detector(out)
    assert isinstance(det, DPADetector) and det.card.extra["feature_norm"] == "none"
    assert det.loss.feature_norm == "none" and det.loss.stats == {}
    # the loaded model scores with raw features: raw score = hand-computed relative L1 of f(x), f(ae(x))
    x = torch.from_numpy(blob_volume((16, 16, 16), seed=1)[:, :, 6:10]).permute(2, 0, 1)[:, None].contiguous()
    with torch.no_grad():
        fx, fy = det.extractor(x, "r12"), det.extractor(det.ae(x, 16, 1.0), "r12")
        raw, _ = det.raw_scores(x)
    torch.testing.assert_close(raw, (fx - fy).abs().mean(dim=(1, 2, 3)) / fx.abs().mean(dim=(1, 2, 3)))
    # a card without the key (written before the option existed) loads as channel: it needs the statistics
    card = out.with_suffix(".json")
    data = json.loads(card.read_text())
    del data["extra"]["feature_norm"]
    card.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="feature statistics"):
        load_detector(out)
