"""scripts/benchmark_speed.py runs end to end at a tiny size and prints one table with every part."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from tests.conftest import blob_volume, save_nifti

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark_speed.py"


def test_benchmark_speed_tiny(tmp_path: Path, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("benchmark_speed", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "00000.nii.gz", blob_volume((32, 32, 32), seed=1))
    out_json = tmp_path / "speed.json"
    mod.main(["--input", str(inp), "-n", "1", "--size", "32", "--width", "0.0625", "--memory", "none",
              "--device", "cpu", "--json", str(out_json)])
    table = capsys.readouterr().out
    assert "device=cpu" in table and "threads=" in table and "torch=" in table
    parts = {line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line}
    assert {"a", "b", "c", "d", "e"} <= parts
    saved = json.loads(out_json.read_text())
    assert saved["raw"]["walls"]["pixel"] > 0 and saved["raw"]["floor"]["read"] > 0
    assert saved["raw"]["gzip"] and all(g["roundtrip_equal"] for g in saved["raw"]["gzip"])
    assert saved["raw"]["naive"]["seconds"] > 0
