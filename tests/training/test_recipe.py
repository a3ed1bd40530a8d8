"""``train --recipe CARD``: the card's settings, at a tiny size, give a card with the same settings."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mood_detector.bundled import bundled_weights_dir
from mood_detector.cli import main
from mood_detector.provenance import DATA_COMMAND_FILE
from mood_detector.training.recipe import read_recipe
from mood_detector.weights import ModelCard, load_weights

#: overridden on the command line to train in seconds
TINY = {"size": 32, "width": 0.125, "epochs": 1}
#: what a card says about its data or its build, not about its settings
DATA_FIELDS = {"training_data", "data_command", "commit", "package_version"}
# not settings: what the data and this version's training made (the intensity scheme is the code's, see preprocess)
DATA_EXTRA = {"n_train_volumes", "bn_recomputed", "recipe", "preprocess"}


def _recipe_from_bundled(kind: str, tmp_path: Path) -> Path:
    """A copy of a bundled nsa card, as a recipe file outside weights/."""
    recipe = tmp_path / f"{kind}_nsa.json"
    recipe.write_text((bundled_weights_dir() / kind / "nsa.json").read_text())
    return recipe


@pytest.mark.parametrize("kind", ["brain", "abdom"])
def test_recipe_reproduces_the_bundled_nsa_settings(kind, volume_dir, tmp_path):
    recipe = _recipe_from_bundled(kind, tmp_path)
    out = tmp_path / "runs" / kind / "nsa.safetensors"
    args = ["train", "--recipe", str(recipe), "-i", str(volume_dir), "-o", str(out), "--device", "cpu"]
    for key, value in TINY.items():
        args += [f"--{key}", str(value)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output

    # the cards as read (a bundled card from an earlier version has its former fields moved into ``extra``)
    want = asdict(ModelCard.from_dict(json.loads(recipe.read_text())))
    got = json.loads(out.with_suffix(".json").read_text())
    for key in set(want) - DATA_FIELDS - {"extra"}:
        assert got[key] == (TINY[key] if key in TINY else want[key]), key
    for key in set(want["extra"]) - DATA_EXTRA:
        assert got["extra"].get(key) == want["extra"][key], key
    assert got["extra"]["recipe"] == str(recipe)
    tensors, _ = load_weights(out)  # the export step: stored in float16
    assert all(t.dtype == torch.float16 for t in tensors.values() if t.is_floating_point())


def test_command_line_options_override_the_recipe(tmp_path):
    recipe = read_recipe(_recipe_from_bundled("brain", tmp_path))
    assert recipe.values["detector"] == "nsa" and recipe.values["epochs"] == 36
    assert recipe.options["train_axes"] == "all" and recipe.options["final_bn"] == "1"
    assert recipe.export.tta_mirror == "0,2" and recipe.export.stored_dtype == "float16"
    assert recipe.data_command.startswith("mood-detector make-data brain")
    assert "feature_weights" not in read_recipe(bundled_weights_dir() / "abdom" / "dpa.json").options

    from mood_detector.training.recipe import apply_recipe

    values = {"epochs": 2, "kind": "brain"}
    opts = apply_recipe(recipe, values, given={"epochs"}, options={"train_axes": "model"})
    assert values["epochs"] == 2 and values["seed"] == 11 and opts["train_axes"] == "model"


def test_recipe_and_preset_together_is_a_usage_error(volume_dir, tmp_path):
    res = CliRunner().invoke(main, ["train", "--recipe", str(_recipe_from_bundled("brain", tmp_path)), "--preset",
                                    "cpu", "-i", str(volume_dir), "-o", str(tmp_path / "x.safetensors")])
    assert res.exit_code == 2 and "--recipe and --preset" in res.output


def test_the_card_names_the_data_command(tmp_path):
    data = tmp_path / "data"
    res = CliRunner().invoke(main, ["make-data", "abdom", "--n", "2", "--size", "32", "--seed", "3", "--out",
                                    str(data)])
    assert res.exit_code == 0, res.output
    command = json.loads((data / DATA_COMMAND_FILE).read_text())["command"]
    assert command == f"mood-detector make-data abdom --n 2 --out {data} --size 32 --seed 3"
    out = tmp_path / "w.safetensors"
    res = CliRunner().invoke(main, ["train", "-i", str(data), "-o", str(out), "--detector", "ae", "--size", "32",
                                    "--width", "0.125", "--epochs", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert json.loads(out.with_suffix(".json").read_text())["data_command"] == command


def test_export_steps_replay_score_axes_and_adapt():
    from mood_detector.training.recipe import ExportSteps
    from tests.inference.test_predict import _column_detector

    det = _column_detector(16)
    ExportSteps(score_axes="model", adapt="bn").apply(det)
    assert det.card.extra["score_axes"] == "model" and det.card.extra["adapt"] == "bn"


def test_the_card_mode_is_the_fpi_and_nsa_option(tmp_path):
    root = bundled_weights_dir()
    card = json.loads((root / "brain" / "fpi.json").read_text())
    (tmp_path / "fpi.json").write_text(json.dumps({**card, "mode": "continuous"}))
    for path, mode in ((root / "brain" / "fpi.json", "discrete"), (tmp_path / "fpi.json", "continuous"),
                       (root / "brain" / "nsa.json", "continuous")):
        recipe = read_recipe(path)
        assert recipe.options["mode"] == mode and "mode" not in recipe.values, path
    dpa = read_recipe(root / "abdom" / "dpa.json")  # dpa's card mode names its features: not a setting
    assert "mode" not in dpa.options and "mode" not in dpa.values
