"""Every number in a marked table of README.md, docs/*.md or a model card equals its source file
(``<!-- numbers: SOURCE -->`` ... ``<!-- /numbers -->``; ``python scripts/sync_numbers.py`` rewrites them)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from tests.docs.test_commands import REPO

spec = importlib.util.spec_from_file_location("sync_numbers", REPO / "scripts" / "sync_numbers.py")
numbers = importlib.util.module_from_spec(spec)
sys.modules.setdefault("sync_numbers", numbers)  # dataclasses look their module up there
spec.loader.exec_module(numbers)


def test_marked_tables_equal_their_sources():
    problems = numbers.check()
    assert not problems, "\n".join(problems) + "\n(run: python scripts/sync_numbers.py)"


def test_the_pages_that_quote_results_have_marked_tables():
    marked = {p.relative_to(REPO).as_posix(): len(numbers.regions(p)) for p in numbers.pages()}
    for page in ("README.md", "docs/nsa.md", "weights/brain/MODEL_CARD_nsa.md", "weights/abdom/MODEL_CARD_nsa.md",
                 "weights/brain/MODEL_CARD.md", "weights/abdom/MODEL_CARD.md", "weights/abdom/MODEL_CARD_dpa.md"):
        assert marked.get(page, 0) >= 1, page


def test_every_source_names_its_command():
    for path in sorted((REPO / "docs" / "results").glob("*.json")):
        src = json.loads(path.read_text(encoding="utf-8"))
        assert src.get("command") and src.get("measured"), path.name


def _fake_repo(tmp_path: Path) -> Path:
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "t.json").write_text(json.dumps({
        "command": "x", "measured": "today", "columns": ["model", "AP"], "format": {"AP": ".3f"},
        "rows": [{"model": "a", "AP": 0.5, "_bold": ["AP"]}, {"model": "b", "AP": 0.01234, "_format": {"AP": ".4f"}}]}))
    (tmp_path / "README.md").write_text("# T\n\n<!-- numbers: docs/results/t.json -->\n| model | AP |\n|---|---|\n"
                                         "| a | **0.500** |\n| b | 0.0123 |\n<!-- /numbers -->\n")
    return tmp_path


def test_a_changed_number_is_reported_and_sync_repairs_it(tmp_path):
    repo = _fake_repo(tmp_path)
    assert numbers.check(repo) == []
    readme = repo / "README.md"
    readme.write_text(readme.read_text().replace("0.0123", "0.0124"))
    problems = numbers.check(repo)
    assert len(problems) == 1 and "'0.0124' should be '0.0123'" in problems[0]
    assert numbers.sync(repo) == [readme] and numbers.check(repo) == []


def test_adopt_writes_a_source_that_reproduces_the_table(tmp_path):
    repo = _fake_repo(tmp_path)
    (repo / "docs" / "results" / "t.json").unlink()
    before = (repo / "README.md").read_text()
    numbers.sync(repo, adopt_missing=True)
    assert (repo / "README.md").read_text() == before
    src = json.loads((repo / "docs" / "results" / "t.json").read_text())
    assert src["rows"][0]["AP"] == 0.5 and src["rows"][1]["_format"] == {"AP": ".4f"}
