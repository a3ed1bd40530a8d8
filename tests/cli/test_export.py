"""``mood-detector export``: a run folder's checkpoint as weights, and float16 copies."""

import torch
from click.testing import CliRunner

from mood_detector.cli import main
from mood_detector.detector import load_detector
from mood_detector.weights import load_weights


def test_checkpoint_of_a_finished_run_equals_its_weights(tiny_fpi, tmp_path):
    out = tmp_path / "ck.safetensors"
    res = CliRunner().invoke(main, ["export", "-i", str(tiny_fpi.parent / "fpi_run"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    a, card = load_weights(out)
    b, ref = load_weights(tiny_fpi)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert card.epochs == ref.epochs and card.extra["skips"] == ref.extra["skips"]


def test_float16_copy_scores_like_the_original(tiny_fpi, tmp_path):
    out = tmp_path / "h.safetensors"
    assert CliRunner().invoke(main, ["export", "-i", str(tiny_fpi), "-o", str(out), "--dtype", "float16"]).exit_code == 0
    tensors, card = load_weights(out)
    assert card.extra["stored_dtype"] == "float16"
    assert all(t.dtype == torch.float16 for t in tensors.values() if t.is_floating_point())
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        s16 = load_detector(out).score_slices(x).pixel
        s32 = load_detector(tiny_fpi).score_slices(x).pixel
    assert (s16 - s32).abs().max() < 1e-2


def test_folder_without_checkpoint_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(main, ["export", "-i", str(tmp_path), "-o", str(tmp_path / "x.safetensors")])
    assert res.exit_code == 1 and "no training checkpoint" in res.output


def test_batchnorm_statistics_recomputed_from_data(tiny_fpi, volume_dir, tmp_path):
    out = tmp_path / "bn.safetensors"
    res = CliRunner().invoke(main, ["export", "-i", str(tiny_fpi), "-o", str(out), "--bn-data", str(volume_dir),
                                    "--bn-batches", "5"])
    assert res.exit_code == 0, res.output
    a, card = load_weights(out)
    b, _ = load_weights(tiny_fpi)
    assert card.extra["bn_recomputed"].startswith("5 batches")        # 2 pairs per epoch: 3 epochs' worth
    stats = [k for k in a if k.endswith("running_mean")]
    assert stats and any(not torch.equal(a[k], b[k]) for k in stats)   # the statistics changed ...
    weights = [k for k in a if k.endswith("conv1.weight")]
    assert all(torch.equal(a[k], b[k]) for k in weights)               # ... the weights did not


def test_batchnorm_recompute_from_empty_volumes_is_a_clear_error(tiny_fpi, tmp_path):
    import numpy as np

    from tests.conftest import save_nifti

    empty = tmp_path / "empty"
    empty.mkdir()
    for i in range(4):  # no non-empty slice anywhere: no batch to recompute from (and no endless search for one)
        save_nifti(empty / f"{i:05d}.nii.gz", np.zeros((32, 32, 32), np.float32))
    res = CliRunner().invoke(main, ["export", "-i", str(tiny_fpi), "-o", str(tmp_path / "e.safetensors"),
                                    "--bn-data", str(empty)])
    assert res.exit_code == 1 and "no non-empty slices in the 4 volumes" in res.output, res.output
    assert not (tmp_path / "e.safetensors").exists()


def test_mirror_set_in_the_card_is_what_predict_uses(tiny_fpi, tmp_path):
    """``export --mirror 0`` writes tta_mirror into the card; a predictor built from it mirrors along axis 0
    unless its config says otherwise."""
    from mood_detector.inference.predictor import PredictConfig, Predictor

    out = tmp_path / "m.safetensors"
    res = CliRunner().invoke(main, ["export", "-i", str(tiny_fpi), "-o", str(out), "--mirror", "0"])
    assert res.exit_code == 0, res.output
    det = load_detector(out)
    assert det.card.extra["tta_mirror"] == "0"
    assert Predictor(det, PredictConfig(device="cpu")).mirror_for(det) == (0,)
    assert Predictor(det, PredictConfig(device="cpu", mirror="none")).mirror_for(det) == ()
    plain = load_detector(tiny_fpi)
    assert Predictor(plain, PredictConfig(device="cpu")).mirror_for(plain) == ()


def _tiny_squid(path):
    """An untrained tiny SQUID model (64² slices) saved to ``path``, as the fixed-seed test's SQUID case sizes it."""
    from mood_detector.detector import TrainConfig
    from mood_detector.models.squid.detector import SQUIDDetector

    torch.manual_seed(0)
    cfg = TrainConfig(detector="squid", size=64, width=0.0625, batch_size=2,
                      options={"queue_slots": "8", "mem_slots": "8", "calib_slices": "8"})
    return SQUIDDetector.build(SQUIDDetector.card_for(cfg, 4)).eval().save(path)


def test_squid_batchnorm_recomputed_from_data(volume_dir, tmp_path):
    """``export --bn-data`` on a SQUID model: the statistics and the memory queue are recomputed from the folder's
    volumes and the score statistics follow; the weights stay; the model scores."""
    src, out = _tiny_squid(tmp_path / "squid.safetensors"), tmp_path / "bn.safetensors"
    res = CliRunner().invoke(main, ["export", "-i", str(src), "-o", str(out), "--bn-data", str(volume_dir),
                                    "--bn-batches", "3"])
    assert res.exit_code == 0, res.output
    a, card = load_weights(out)
    b, _ = load_weights(src)
    assert card.extra["bn_recomputed"] == "3 batches of 2 slices mixed from 4 volumes; queue refilled"
    assert "logit_mean" in card.extra and not torch.equal(a["extra.stats"], b["extra.stats"])
    stats = [k for k in a if k.endswith("running_mean")]
    assert stats and all(not torch.equal(a[k], b[k]) for k in stats if k.startswith("disc."))
    assert any(not torch.equal(a[k], b[k]) for k in stats if k.startswith("gen."))
    weights = [k for k in a if k.endswith(".weight") and "bn" not in k and a[k].ndim > 1]
    assert weights and all(torch.equal(a[k], b[k]) for k in weights)
    scores = load_detector(out).score_slices(torch.rand(2, 1, 64, 64))
    assert scores.pixel.shape == (2, 64, 64) and bool(torch.isfinite(scores.slice).all())


def test_bn_data_for_a_detector_without_a_recompute_is_one_line(tmp_path, volume_dir):
    """A detector without a BatchNorm recompute (here ae) gets one error line naming it, no traceback, no file."""
    from mood_detector.detector import TrainConfig
    from mood_detector.models.ae.detector import AEDetector

    cfg = TrainConfig(detector="ae", size=32, width=0.125, options={"latent": "4"})
    src = AEDetector.build(AEDetector.card_for(cfg, 4)).save(tmp_path / "ae.safetensors")
    res = CliRunner().invoke(main, ["export", "-i", str(src), "-o", str(tmp_path / "o.safetensors"),
                                    "--bn-data", str(volume_dir)])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.exception
    assert res.output.strip().splitlines() == [
        "Error: --bn-data: the ae detector has no BatchNorm recompute (fpi, nsa and squid models have one)"]
    assert not (tmp_path / "o.safetensors").exists()


def test_bn_data_folder_without_volumes_is_one_line(tiny_fpi, tmp_path):
    empty = tmp_path / "none"
    empty.mkdir()
    res = CliRunner().invoke(main, ["export", "-i", str(tiny_fpi), "-o", str(tmp_path / "o.safetensors"),
                                    "--bn-data", str(empty)])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.exception
    assert len(res.output.strip().splitlines()) == 1 and "no .nii or .nii.gz volumes" in res.output
