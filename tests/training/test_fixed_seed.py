"""A tiny fixed-seed training of every detector gives the recorded weights, on any CPU.

Each detector trains for one short epoch (per phase) on tiny blob volumes on the CPU, **in float64** (torch's
default dtype; every detector's training follows it). A digest of every saved tensor and the card's
floating-point calibration values are compared with ``fixed_seed_reference.json``.

Why float64, and why this digest. The guard pins the training's *behaviour* (which batches are drawn, in which
order, which steps run, with which losses), not one CPU's rounding. In float32 these trainings amplify rounding
without bound (Adam's first steps turn gradient components that are rounding noise, about as large as its eps,
into full steps of size lr; then ReLU pre-activations near 0 flip), so two CPUs' kernels (AVX-512 against AVX2,
oneDNN against ATen's own) gave weights up to 0.6% apart and no float32 tolerance told a CPU from a change of
behaviour. In float64 the rounding noise (~1e-16) stays far below Adam's eps and below any kink. What is left:
the data synthesis runs in float32 numpy/torch, whose SIMD paths differ by an ulp or so between CPUs, and that
moves the float64 weights smoothly, by about as much (measured: see :data:`RTOL`).

A sum of a tensor is a poor digest (a near-zero sum of many terms has no relative precision). Each tensor is
reduced to its norm and :data:`PROJECTIONS` projections on fixed random Gaussian vectors (seeded by the tensor's
name, the same on every machine: numpy's PCG64 and Box-Muller draws are exact). The difference of a projection,
divided by the reference norm, estimates ||w - w_ref|| / ||w_ref||; the test checks the largest such value of
every tensor against :data:`RTOL`. Regenerate the reference only for an intended change of behaviour::

    python -m tests.training.test_fixed_seed --record
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import blob_volume, float64, save_nifti

REFERENCE = Path(__file__).with_name("fixed_seed_reference.json")
#: random projections per tensor
PROJECTIONS = 4
#: largest relative deviation (||w - w_ref|| / ||w_ref|| per tensor, estimated by the projections; relative
#: difference of each card value) that still counts as the same training. Measured with :func:`spread` on an
#: AVX-512 AMD EPYC between its own kernels and (a) ``ATEN_CPU_CAPABILITY=default``, (b) ``=avx2`` with
#: ``ONEDNN_MAX_CPU_ISA=AVX2`` and numpy's AVX-512 paths off (``NPY_DISABLE_CPU_FEATURES``), (c) no SIMD beyond
#: SSE4 anywhere (ATen default, oneDNN SSE41, ``MKL_ENABLE_INSTRUCTIONS=SSE4_2``, ``MKL_CBWR=COMPATIBLE``, numpy
#: without AVX2/FMA3): largest deviation SQUID 1.7e-6 (its adversarial training; (b)), DDAD 2.7e-8, AE 1.2e-8,
#: NSA 1.7e-11, FPI 1.7e-13, DPA 1e-15. RTOL leaves a factor 60 over the largest; a change of behaviour
#: (:data:`CHANGES`) moves the weights by about 3 (a factor 3e4 over RTOL).
RTOL = 1e-4
#: a reference norm (or card value) smaller than this is compared against it instead (an all-zero tensor)
NORM_FLOOR = 1e-8

_DDAD = {"k": "2", "input_size": "32", "hidden": "32", "latent": "8", "asr_mid": "8", "ae_epochs": "1",
         "ae_batch": "8", "asr_epochs": "1", "asr_batch": "8", "max_slices": "16", "calib_slices": "16"}

#: detector -> (TrainConfig keywords, whether it also gets an unlabeled folder)
CASES: dict[str, tuple[dict[str, Any], bool]] = {
    "ae": (dict(size=32, width=0.125, batch_size=8, max_batches_per_pair=2, options={"latent": "4"}), False),
    "fpi": (dict(size=32, width=0.125, batch_size=8, max_batches_per_pair=2,
                 options={"probe_volumes": "0", "swa_epochs": "1"}), False),
    "nsa": (dict(size=32, width=0.125, batch_size=8, max_batches_per_pair=2, options={"probe_volumes": "0"}),
            False),
    "squid": (dict(size=64, width=0.0625, batch_size=2, max_batches_per_pair=2,
                   options={"queue_slots": "8", "mem_slots": "8", "calib_slices": "8"}), False),
    "dpa": (dict(size=32, batch_size=8, max_batches_per_pair=1,
                 options={"nf": "4", "latent_dim": "8", "max_res": "16", "stage_epochs": "1", "fade": "0.5",
                          "feature_layer": "r12", "feature_epochs": "1", "stats_batches": "2",
                          "min_mean": "0.02"}), False),
    "ddad": (dict(size=32, width=0.5, options=_DDAD), True),
    "unet3d": (dict(size=32, options={"patch": "16", "base": "2", "levels": "3", "steps_per_epoch": "2",
                                      "patches_per_step": "2", "val_volumes": "1", "val_examples": "1"}), False),
    "unet25d": (dict(size=32, options={"patch": "16", "base": "2", "levels": "3", "steps_per_epoch": "2",
                                       "patches_per_step": "2", "val_volumes": "1", "val_examples": "1"}), False),
}


def _volumes(folder: Path, seeds: list[int]) -> Path:
    folder.mkdir(parents=True)
    for i, s in enumerate(seeds):
        save_nifti(folder / f"{i:05d}.nii.gz", blob_volume(seed=s))
    return folder


def _projections(key: str, flat: np.ndarray) -> list[float]:
    """``flat``'s dot products with :data:`PROJECTIONS` standard normal vectors seeded by the tensor's name."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    return [float(rng.standard_normal(flat.size) @ flat) for _ in range(PROJECTIONS)]


def digest(path: Path) -> dict[str, Any]:
    """Per tensor of a weights file: floating point: ``[norm, projection, ...]``; integer: ``["int", values]``.
    And the card's floating-point numbers."""
    from safetensors.torch import load_file

    out: dict[str, Any] = {"tensors": {}, "card": {}}
    for key, t in sorted(load_file(str(path)).items()):
        if t.is_floating_point():
            flat = t.detach().double().flatten().numpy()
            out["tensors"][key] = [float(np.linalg.norm(flat)), *_projections(key, flat)]
        else:
            out["tensors"][key] = ["int", t.flatten().tolist()]
    card = json.loads(path.with_suffix(".json").read_text())
    for key, value in sorted(card.get("extra", {}).items()):
        if isinstance(value, float):
            out["card"][key] = value
    return out


def deviations(got: dict[str, Any], ref: dict[str, Any]) -> dict[str, float]:
    """Relative deviation of every tensor and card value of ``got`` from ``ref`` (``inf``: missing, another
    shape of digest, or integers that differ)."""
    out: dict[str, float] = {}
    for key, r in ref["tensors"].items():
        g = got["tensors"].get(key)
        if g is None or len(g) != len(r) or (r[0] == "int") != (g[0] == "int"):
            out[key] = math.inf
        elif r[0] == "int":
            out[key] = 0.0 if g[1] == r[1] else math.inf
        else:
            out[key] = max(abs(a - b) for a, b in zip(g, r)) / max(r[0], NORM_FLOOR)
    for key in got["tensors"].keys() - ref["tensors"].keys():
        out[key] = math.inf
    for key, r in ref["card"].items():
        g = got["card"].get(key)
        out[f"card:{key}"] = math.inf if g is None else abs(g - r) / max(abs(r), NORM_FLOOR)
    return out


def train_tiny(name: str, root: Path) -> dict[str, Any]:
    """Train detector ``name`` tiny into ``root``; the digest of its weights."""
    from mood_detector.detector import TrainConfig
    from mood_detector.training.api import train_detector

    kw, unlabeled = CASES[name]
    train = _volumes(root / "train", [40, 41, 42, 43])
    options = dict(kw["options"])
    if unlabeled:
        options["unlabeled"] = str(_volumes(root / "unl", [50, 51]))
    cfg = TrainConfig(detector=name, kind="brain", epochs=1, device="cpu", seed=3, **{**kw, "options": options})
    with float64():
        return digest(train_detector(train, root / f"{name}.safetensors", cfg, data_command=""))


def worst(dev: dict[str, float], n: int = 5) -> list[tuple[str, float]]:
    return sorted(dev.items(), key=lambda kv: -kv[1])[:n]


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixed_seed_training_gives_the_recorded_weights(name: str, tmp_path: Path):
    ref = json.loads(REFERENCE.read_text())[name]
    dev = deviations(train_tiny(name, tmp_path), ref)
    bad = {k: v for k, v in dev.items() if not v <= RTOL}
    assert not bad, f"{len(bad)} of {len(dev)} tensors/card values differ from the recorded ones: {worst(bad)}"


def _reversed_batches(monkeypatch: pytest.MonkeyPatch) -> str:
    import mood_detector.models.ae.detector as ae

    orig = ae.epoch_slices
    monkeypatch.setattr(ae, "epoch_slices", lambda *a, **k: list(orig(*a, **k))[::-1])
    return "ae"


def _another_pair_draw(monkeypatch: pytest.MonkeyPatch) -> str:
    import mood_detector.models.fpi.detector as fpi

    orig = fpi.epoch_pairs
    monkeypatch.setattr(fpi, "epoch_pairs", lambda n, rng: orig(n, np.random.default_rng(12345)))
    return "nsa"


#: one-line changes of behaviour the guard must catch: the same batches in another order (AE), and another draw
#: of the epoch's volume pairs (NSA; FPI shares the function). Measured: largest deviation 3.4 and 2.8, against
#: 1.7e-6 for the largest difference between kernel sets (SQUID; see RTOL)
CHANGES = {"step order": _reversed_batches, "pair draw": _another_pair_draw}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_the_guard_fails_on_a_change_of_behaviour(change: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    name = CHANGES[change](monkeypatch)
    dev = deviations(train_tiny(name, tmp_path), json.loads(REFERENCE.read_text())[name])
    assert max(dev.values()) > 100 * RTOL, f"{change} went unnoticed: {worst(dev)}"


def record(names: list[str], path: Path = REFERENCE) -> None:
    """Write the digests of ``names`` (all detectors when empty) into ``path`` (default :data:`REFERENCE`)."""
    ref = json.loads(path.read_text()) if path.is_file() else {}
    for name in names or sorted(CASES):
        with tempfile.TemporaryDirectory() as tmp:
            ref[name] = train_tiny(name, Path(tmp))
        print(f"recorded {name}: {len(ref[name]['tensors'])} tensors")
    path.write_text(dumps(ref))


def spread(a: Path, b: Path) -> None:
    """Print, per detector, the largest deviation between two recorded digest files (e.g. one recorded under
    ``ATEN_CPU_CAPABILITY=default``, one under the machine's own kernels): how :data:`RTOL` was set."""
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    for name in sorted(da.keys() & db.keys()):
        print(name, [(k, f"{v:.2e}") for k, v in worst(deviations(db[name], da[name]), 3)])


def dumps(ref: dict[str, Any]) -> str:
    """The reference as JSON with one line per tensor (readable diffs when a detector is re-recorded)."""
    lines = ["{"]
    for i, name in enumerate(sorted(ref)):
        lines.append(f"{json.dumps(name)}: {{")
        lines.append(f" \"card\": {json.dumps(ref[name]['card'], sort_keys=True)},")
        lines.append(' "tensors": {')
        keys = sorted(ref[name]["tensors"])
        for j, key in enumerate(keys):
            comma = "," if j < len(keys) - 1 else ""
            lines.append(f"  {json.dumps(key)}: {json.dumps(ref[name]['tensors'][key])}{comma}")
        lines.append(" }}" + ("," if i < len(ref) - 1 else ""))
    return "\n".join(lines + ["}"]) + "\n"


USAGE = ("usage: python -m tests.training.test_fixed_seed --record [DETECTOR ...]\n"
         "       python -m tests.training.test_fixed_seed --record-to FILE [DETECTOR ...]\n"
         "       python -m tests.training.test_fixed_seed --spread FILE_A FILE_B")

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--record"]:
        record(args[1:])
    elif args[:1] == ["--record-to"] and len(args) >= 2:
        record(args[2:], Path(args[1]))
    elif args[:1] == ["--spread"] and len(args) == 3:
        spread(Path(args[1]), Path(args[2]))
    else:
        sys.exit(USAGE)
