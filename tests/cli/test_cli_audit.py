"""Option values that the option parser accepts but that cannot work: each command reports them as a usage error
(exit code 2) in one line that names the option, before any work starts (no training, no data generation).

Audit of every command's options (values the parsers accept), and what each did before these checks:
  train       --size not a multiple of the network's stride (fpi 16 brain / 32 abdom; also with --preset):
              a raw RuntimeError from the network after the data was read (squid: exit 1 without naming
              --size); squid --width whose bottleneck does not split over its 8 attention heads (0.01 at
              --size 64): exit 1 naming neither; --lr 0: trained with lr 0; --lr < 0 / nan: exit 1 from
              Adam; --seed < 0 or >= 2**32: exit 1 with numpy's / torch's message; --device foo or absent
              cuda: raw RuntimeError / AssertionError; --opt without '=': a traceback; unknown --opt keys:
              ignored by ae; bool option values other than 1/0/true/false/yes/no/on/off: silently false; bad
              values: int()'s message;
              --unlabeled / --feature-weights for detectors that do not use them: "unknown option unlabeled";
              an output or run folder that cannot be made: a raw OSError (the weights' folder only at the end
              of training); one volume for fpi, more batches per step than volume pairs: exit 1 after the
              volumes were decoded.
  predict     -w not a weights file / not loadable: exit 2 without naming the option; --kind other than the
              weights file's kind and --detector other than its detector (or not a detector at all): ignored,
              so brain weights scored abdomen volumes; --device foo: a traceback.
  evaluate    --json where no file can be written: an OSError after the evaluation; --manifest not a manifest:
              a JSONDecodeError traceback.
  make-data   --out not creatable, --seed < 0: tracebacks; --templates unknown: exit 1.
  make-testset -o, report -o: not creatable: tracebacks.
  visibility  a folder that is not a test set, thresholds outside (0, 1): usage errors before any reading.
  benchmark   --size / --train-size / --opt / --device that cannot work and --weights of another detector or
              kind: found only after generating the data (tracebacks); --out not creatable: a traceback.
  demo        --train-size not a multiple of 16, --kinds unknown, --device foo, --out not creatable: tracebacks
              or unrelated errors.
Values that work as they are: ae, ddad and dpa take any --size (ae pads to its stride, ddad and dpa resize);
--width down to 0.01 for fpi, ae, dpa and ddad (every channel count is at least 1); --batch-size 2 and odd
sizes; --epochs 1; the click types (ranges, choices, existing paths) already reject the rest with exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mood_detector.cli import main
from tests.conftest import blob_volume, save_nifti

TRAIN = "train -i {data} -o {out}/w.safetensors --device cpu --epochs 1 --width 0.125 --batch-size 4"
TRAIN_BARE = "train -i {data} -o {out}/w.safetensors --device cpu --width 0.125"
PREDICT = "predict both -i {data} -o {out}/pred --device cpu --no-progress"
CUDA99 = "no CUDA device is visible" if not torch.cuda.is_available() else "CUDA device(s), cuda:0 to"

CASES = [
    # --- train: sizes the network cannot take
    (TRAIN + " --size 40", "'--size': 40 is not a multiple of 16 (the total stride of the fpi brain network); "
                           "use e.g. 32 or 48"),
    (TRAIN + " --kind abdom --size 48", "'--size': 48 is not a multiple of 32"),
    (TRAIN + " --detector squid --size 96", "'--size': 96 is not a multiple of 64"),
    (TRAIN + " --preset cpu --size 40", "'--size': 40 is not a multiple of 16"),
    (TRAIN + " --detector squid --size 64 --width 0.01", "'--width': 0.01 gives squid 1 x 2^2 in-painting features, "
                                                          "not divisible by its 8 attention heads; use e.g. --width "
                                                          "0.015625, or --size 128"),
    # --- train: schedule, seed, device
    (TRAIN + " --lr 0", "'--lr': 0.0 is not a learning rate"),
    (TRAIN + " --lr nan", "'--lr': nan is not a learning rate"),
    (TRAIN + " --seed -1", "'--seed': -1 is out of range; use 0 to 4294967295"),
    (TRAIN + " --seed 4294967296", "'--seed': 4294967296 is out of range"),
    (TRAIN + " --device foo", "'--device': 'foo' is not a device; use auto, cpu, cuda or cuda:N"),
    (TRAIN + " --device cuda:99", f"'--device': cuda:99: {CUDA99}"),
    # --- train: detector options
    (TRAIN + " --opt foo", "'--opt': 'foo' is not of the form KEY=VALUE"),
    (TRAIN + " --opt =1", "'--opt': '=1' is not of the form KEY=VALUE"),
    (TRAIN + " --opt nosuch=1", "'--opt': unknown fpi option(s) nosuch; known: "),
    (TRAIN + " --opt skips=maybe", "'--opt': bad fpi option value: skips='maybe' is not a boolean"),
    (TRAIN + " --opt contrast=2", "'--opt': bad fpi option value: contrast must be a probability"),
    (TRAIN + " --detector ae --opt latent=abc", "'--opt': bad ae option value: latent='abc' is not an int"),
    (TRAIN + " --detector ae --opt nosuch=1", "'--opt': unknown ae option(s) nosuch"),
    (TRAIN_BARE + " --detector ddad --opt input_size=40", "'--opt': bad ddad option value: ddad input_size must be a positive multiple of 16"),
    (TRAIN + " --detector ddad", "'--batch-size': the ddad detector does not use it"),
    (TRAIN_BARE + " --detector ae --swa-epochs 2", "'--swa-epochs': the ae detector does not use it"),
    (TRAIN_BARE + " --detector dpa --mode continuous", "'--mode': the dpa detector does not use it"),
    (TRAIN + " --size 32 --detector nsa --mode discrete", "'--mode': 'discrete': the nsa detector's output is always "
                                                          "one continuous channel"),
    (TRAIN + " --detector dpa --opt max_res=48", "'--opt': max_res must be a power of two >= 8, got 48"),
    (TRAIN + " --unlabeled {data}", "'--unlabeled': the fpi detector does not use it"),
    (TRAIN + " --detector ae --feature-weights {file}", "'--feature-weights': the ae detector does not use it"),
    # --- train: inputs and outputs
    ("train -i {data} -o {file}/w.safetensors --device cpu", "'--output': {file}: output path exists and is not a "
                                                             "folder"),
    ("train -i {data} -o {data} --device cpu", "'-o' / '--output': File '{data}' is a directory"),
    (TRAIN + " --run-dir {file}/run", "'--run-dir': {file}/run: cannot create the output folder"),
    ("train -i {empty} -o {out}/w.safetensors --device cpu", "'--input': {empty}: no .nii/.nii.gz training volumes"),
    ("train -i {one} -o {out}/w.safetensors --device cpu --size 32",
     "'--input': fpi trains on pairs of volumes: needs at least 2 training volumes, found 1"),
    (TRAIN + " --size 32 --batches-per-step 3",
     "'--batches-per-step': 3 batches per step need at least 3 volume pairs (5 training volumes); found 4"),
    # --- predict
    (PREDICT + " -w {file}", "'-w' / '--weights': {file}: weights must be a .safetensors file"),
    (PREDICT + " -w {fake}", "'-w' / '--weights': {fake}: weights file or its card"),
    (PREDICT + " -w {fpi} --kind abdom", "'--kind': abdom: the weights {fpi} are for brain volumes"),
    (PREDICT + " -w {fpi} --adapt auto --adapt-budget 0", "'--adapt-budget': 0.0 is not in the range 0<x<=1"),
    (PREDICT + " -w {fpi} --detector ae", "'--detector': ae: the weights {fpi} are fpi weights"),
    (PREDICT + " -w {fpi} --detector nosuch", "'--detector': 'nosuch' is not one of"),
    (PREDICT + " -w {fpi} --device foo", "'--device': 'foo' is not a device"),
    (PREDICT + " -w {fpi} --mirror 3", "'--mirror': mirror must be 'none' or a comma list of the axes 0, 1, 2"),
    # --- evaluate
    ("evaluate --pred {data} --labels {labels} --task pixel --json {file}/e.json",
     "'--json': {file}: output path exists and is not a folder"),
    ("evaluate --pred {data} --labels {labels} --task pixel --manifest {file}",
     "'--manifest': {file} is not a test set manifest"),
    # --- make-data / make-testset / report
    ("make-data abdom --n 1 --size 8 --out {file}/d", "'--out': {file}/d: cannot create the output folder"),
    ("make-data abdom --n 1 --size 8 --out {out}/d --seed -1", "'--seed': -1 is not in the range x>=0"),
    ("make-data brain --n 1 --size 8 --out {out}/d --templates nosuch",
     "'--templates': unknown brain template 'nosuch'"),
    ("make-testset -i {data} -o {file}/t", "'--output': {file}/t: cannot create the output folder"),
    ("visibility -t {data}", "'-t' / '--testset': {data}: no manifest.json"),
    ("visibility -t {data} --thresholds 0.02,2", "'--thresholds': '0.02,2': thresholds must be numbers in (0, 1)"),
    ("report -i {data} -p {data} -o {file}/r", "'--out': {file}/r: cannot create the output folder"),
    ("report -i {data} -p {data} -o {out}/r --slice-score top:2", "'--slice-score': slice score rule 'top:2'"),
    # --- export: checked before the model is loaded
    ("export -i {fpi} -o {out}/e.safetensors --slice-score max", "'--slice-score': slice score rule 'max'"),
    ("export -i {fpi} -o {out}/e.safetensors --mirror x", "'--mirror': mirror must be 'none' or a comma list"),
    # --- benchmark: checked before any data is generated
    ("benchmark --out {out}/b --size 40 --no-progress", "'--size': 40 is not a multiple of 16"),
    ("benchmark --out {out}/b --train-size 40 --no-progress", "'--train-size': 40 is not a multiple of 16"),
    ("benchmark --out {out}/b --opt fpi:skips=maybe --no-progress", "'--opt': bad fpi option value"),
    ("benchmark --out {out}/b --detectors fpi --weights fpi={fpi} --kinds abdom --no-progress",
     "'--weights': fpi={fpi} holds fpi weights for brain, not fpi for abdom"),
    ("benchmark --out {out}/b --device foo --no-progress", "'--device': 'foo' is not a device"),
    ("benchmark --out {file}/b --no-progress", "'--out': {file}/b: cannot create the output folder"),
    # --- demo: checked before anything is generated
    ("demo --out {out}/demo --train --train-size 40", "'--train-size': 40 is not a multiple of 16"),
    ("demo --out {out}/demo --kinds brain,liver", "'--kinds': brain,liver: choose from abdom, brain"),
    ("demo --out {out}/demo --device foo", "'--device': 'foo' is not a device"),
    ("demo --out {file}/demo", "'--out': {file}/demo: cannot create the output folder"),
]


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tiny_fpi: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audit")
    data, one, empty, labels = root / "data", root / "one", root / "empty", root / "labels" / "pixel"
    for d in (data, one, empty, labels):
        d.mkdir(parents=True)
    for i in range(4):
        save_nifti(data / f"{i:05d}.nii.gz", blob_volume((16, 16, 16), seed=i))
    save_nifti(one / "00000.nii.gz", blob_volume((16, 16, 16)))
    (root / "file.txt").write_text("not a folder, not weights, not JSON")
    (root / "fake.safetensors").write_bytes(b"no card beside it")
    return {"data": data, "one": one, "empty": empty, "labels": labels.parent, "file": root / "file.txt",
            "fake": root / "fake.safetensors", "fpi": tiny_fpi}


IDS = [f"{i:02d}-{cmd.split()[0]}-{msg.split(':')[0].strip(chr(39))}" for i, (cmd, msg) in enumerate(CASES)]


@pytest.mark.parametrize("command, message", CASES, ids=IDS)
def test_bad_option_value_is_a_one_line_usage_error(command: str, message: str, paths: dict[str, Path],
                                                    tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fill = {**{k: str(v) for k, v in paths.items()}, "out": str(tmp_path / "out")}
    res = CliRunner().invoke(main, command.format(**fill).split(), catch_exceptions=False)
    errors = [line for line in res.output.splitlines() if line.startswith("Error: ")]
    assert res.exit_code == 2, res.output
    assert len(errors) == 1 and errors[0].startswith("Error: Invalid value for '"), res.output
    assert message.format(**fill) in errors[0], res.output
    # found before any work: nothing trained, generated or written
    assert not (tmp_path / "out").exists() or not any(p.is_file() for p in (tmp_path / "out").rglob("*"))
