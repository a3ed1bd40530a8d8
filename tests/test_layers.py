"""The package's layers: no module imports a layer above its own.

Read from the source with ``ast`` (every ``import`` / ``from ... import`` of ``mood_detector``, including the
ones inside functions); the registry's lazy ``importlib`` of the detectors by name is not an import edge. A
module may import its own layer and any below it.

From the bottom: the foundation (errors; I/O and kinds; preprocessing, weights files, provenance, distributed
helpers; the detector contract); generators of data and training tasks; inference (the harness, which knows
detectors only through the contract); evaluation; training (the engine and the data loaders); the detectors,
which build on the engine; reports; orchestration (demo, benchmarks); the command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "mood_detector"

#: bottom to top; each entry is one layer of top-level modules / sub-packages of mood_detector
LAYERS: list[set[str]] = [
    {"__init__", "errors"},
    {"io", "kinds", "logging_setup"},
    {"preprocess", "weights", "provenance", "distributed", "bundled"},
    {"detector"},
    {"tasks", "data"},
    {"inference"},
    {"evaluation"},
    {"training"},
    {"models"},
    {"report"},
    {"pipelines"},
    {"cli", "__main__"},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _unit(module: str) -> str:
    """``mood_detector.models.fpi.detector`` -> ``models``; ``mood_detector`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("mood_detector"):
            if node.module == "mood_detector":  # from mood_detector import x: x is a module or a name of __init__
                out |= {_unit("mood_detector." + a.name) if ("mood_detector." + a.name).split(".")[1] in LEVEL
                        else "__init__" for a in node.names}
            else:
                out.add(_unit(node.module))
        elif isinstance(node, ast.Import):
            out |= {_unit(a.name) for a in node.names if a.name.startswith("mood_detector")}
    return out


def _unit_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.stem != "__init__" else "__init__"


def test_every_module_has_a_layer():
    units = {_unit_of(p) for p in PACKAGE.rglob("*.py")}
    assert units <= set(LEVEL), f"assign a layer in tests/test_layers.py to: {sorted(units - set(LEVEL))}"


def test_no_module_imports_a_layer_above_it():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit_of(path)
        for target in _imports(path):
            if target in LEVEL and LEVEL[target] > LEVEL[unit]:
                upward.append(f"{path.relative_to(PACKAGE.parent)} ({unit}) imports {target}")
    assert not upward, "upward imports:\n" + "\n".join(upward)
