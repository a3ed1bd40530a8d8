"""``mood-detector benchmark-speed`` runs end to end at a tiny size and prints one table with every part."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mood_detector.cli import main
from mood_detector.pipelines.speedbench import SpeedResults, run_memory_probes
from tests.conftest import blob_volume, save_nifti


def test_benchmark_speed_tiny(tmp_path: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "00000.nii.gz", blob_volume((32, 32, 32), seed=1))
    out_json = tmp_path / "speed.json"
    res = CliRunner().invoke(main, ["benchmark-speed", "--input", str(inp), "-n", "1", "--size", "32",
                                    "--width", "0.0625", "--memory", "none", "--device", "cpu",
                                    "--json", str(out_json)])
    assert res.exit_code == 0, res.output
    table = res.stdout
    assert "device=cpu" in table and "threads=" in table and "torch=" in table
    parts = {line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line}
    assert {"a", "b", "c", "d", "e"} <= parts
    saved = json.loads(out_json.read_text())
    assert saved["raw"]["walls"]["pixel"] > 0 and saved["raw"]["floor"]["read"] > 0
    assert saved["raw"]["gzip"] and all(g["roundtrip_equal"] for g in saved["raw"]["gzip"])
    assert saved["raw"]["naive"]["seconds"] > 0


def test_benchmark_speed_help_and_errors(tmp_path: Path):
    runner = CliRunner()
    res = runner.invoke(main, ["benchmark-speed", "--help"])
    assert res.exit_code == 0
    for opt in ("--kind", "--input", "--n-volumes", "--width", "--memory", "--memory-width", "--no-gzip", "--json"):
        assert opt in res.output
    flat = " ".join(res.output.split())  # help lines wrap
    assert "[default: both]" in flat and "[default: 0.0625;" in flat
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(main, ["benchmark-speed", "--input", str(empty), "--device", "cpu", "--memory", "none"])
    assert res.exit_code == 1 and "no .nii/.nii.gz volumes" in res.output


def test_memory_probe_child_process(tmp_path: Path):
    """Part (f) runs in a fresh ``python -m mood_detector.pipelines.speedbench`` process (here on a small
    volume and network instead of the full-size ones)."""
    src = tmp_path / "mem_brain"
    src.mkdir()
    save_nifti(src / "00000.nii.gz", blob_volume((32, 32, 32), seed=2))
    res = SpeedResults()
    run_memory_probes(["brain"], 0.0625, tmp_path, 0, res, size=32)
    assert [r.part for r in res.rows] == ["f"] and res.rows[0].value.endswith("MiB"), res.rows
    probe = res.raw["memory"][0]
    assert probe["shape"] == [32, 32, 32] and probe["peak_rss_mib"] >= probe["base_rss_mib"] > 0
