"""docs/add-a-detector.md stays short and follows the autoencoder it shows."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_page_is_short_and_its_names_exist_in_the_autoencoder():
    page = (REPO / "docs" / "add-a-detector.md").read_text(encoding="utf-8")
    assert len(page.splitlines()) < 150
    source = (REPO / "mood_detector" / "models" / "ae" / "detector.py").read_text(encoding="utf-8")
    for name in ("AEOptions", "options_cls", "epoch_slices", "Engine", "Phase", "Step", "learning_rate",
                 "engine.resume()", "card_for"):
        assert name in page and name in source, name
    assert re.search(r"\[add-a-detector\.md\]\(add-a-detector\.md\)", (REPO / "docs" / "index.md").read_text())
