"""make_subjects: one switch from kind (and --randomise) to the generator, as make-data, the demo and the
benchmarks use it."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import pytest

from mood_detector.pipelines.subjects import check_templates, make_subjects


@pytest.mark.parametrize("kind,randomise", [("abdom", False), ("abdom", True), ("brain", False), ("brain", True)])
def test_each_kind_and_randomise_writes_numbered_cubes(tmp_path: Path, kind: str, randomise: bool):
    files = make_subjects(kind, tmp_path / "out", 1, size=24, seed=1, start=3, randomise=randomise)
    assert [f.name for f in files] == ["00003.nii.gz"]
    assert nib.load(str(files[0])).shape == (24, 24, 24)


def test_unknown_templates_are_refused():
    with pytest.raises((ValueError, RuntimeError)):
        check_templates("brain", "no-such-template")
    check_templates("abdom", "anything")  # phantoms have no templates
