"""A tiny fixed-seed training of every detector gives the recorded weights.

Each detector trains for one short epoch (per phase) on tiny blob volumes on the CPU; a digest of every saved
tensor (sum, sum of squares, a few values) and of the card's numeric calibration values is compared with
``fixed_seed_reference.json`` to a relative 1e-6 (SQUID: looser, :data:`TOLERANCE`). The reference pins the
training behaviour: a refactor of the training code must reproduce it exactly. Regenerate it only for an intended change of behaviour::

    python -m tests.training.test_fixed_seed --record
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import blob_volume, save_nifti

REFERENCE = Path(__file__).with_name("fixed_seed_reference.json")
REL = 1e-6
#: per detector (relative, absolute) tolerance where other CPU kernels (another ATEN_CPU_CAPABILITY) change the
#: result beyond REL: SQUID's adversarial training amplifies the kernels' rounding differences (measured under
#: ATEN_CPU_CAPABILITY=avx2: median 4e-7, largest 0.7% relative, 2e-4 absolute on the weight sums); a change of
#: behaviour (another step order, another draw) moves them by far more
TOLERANCE = {"squid": (1e-2, 1e-3)}

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
}


def _volumes(folder: Path, seeds: list[int]) -> Path:
    folder.mkdir(parents=True)
    for i, s in enumerate(seeds):
        save_nifti(folder / f"{i:05d}.nii.gz", blob_volume(seed=s))
    return folder


def digest(path: Path) -> dict[str, Any]:
    """Per tensor of a weights file: [sum, sum of squares, first, middle and last value]; and its card's
    floating-point numbers."""
    from safetensors.torch import load_file

    out: dict[str, Any] = {"tensors": {}, "card": {}}
    for key, t in sorted(load_file(str(path)).items()):
        flat = t.detach().double().flatten()
        picks = [float(flat[i]) for i in sorted({0, flat.numel() // 2, flat.numel() - 1})] if flat.numel() else []
        out["tensors"][key] = [float(flat.sum()), float((flat * flat).sum()), *picks]
    card = json.loads(path.with_suffix(".json").read_text())
    for key, value in sorted(card.get("extra", {}).items()):
        if isinstance(value, float):
            out["card"][key] = value
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
    return digest(train_detector(train, root / f"{name}.safetensors", cfg, data_command=""))


def _close(a: float, b: float, name: str = "") -> bool:
    rel, abs_ = TOLERANCE.get(name, (REL, 1e-12))
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixed_seed_training_gives_the_recorded_weights(name: str, tmp_path: Path):
    ref = json.loads(REFERENCE.read_text())[name]
    got = train_tiny(name, tmp_path)
    assert sorted(got["tensors"]) == sorted(ref["tensors"]), "the saved tensors differ"
    bad = [k for k, r in ref["tensors"].items()
           if len(got["tensors"][k]) != len(r) or not all(_close(a, b, name) for a, b in zip(got["tensors"][k], r))]
    assert not bad, f"{len(bad)} tensors differ from the recorded ones, e.g. {bad[:5]}"
    bad_card = [k for k, r in ref["card"].items() if k not in got["card"] or not _close(got["card"][k], r, name)]
    assert not bad_card, f"card values differ: {bad_card}"


def record(names: list[str]) -> None:
    """Write the reference digests of ``names`` (all detectors when empty) into :data:`REFERENCE`."""
    torch.set_num_threads(1)  # as the test suite runs (tests/conftest.py): the same reduction order
    ref = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else {}
    for name in names or sorted(CASES):
        with tempfile.TemporaryDirectory() as tmp:
            ref[name] = train_tiny(name, Path(tmp))
        print(f"recorded {name}: {len(ref[name]['tensors'])} tensors")
    REFERENCE.write_text(dumps(ref))


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


if __name__ == "__main__":
    if "--record" not in sys.argv:
        sys.exit("usage: python -m tests.training.test_fixed_seed --record [DETECTOR ...]")
    record([a for a in sys.argv[1:] if a != "--record"])
