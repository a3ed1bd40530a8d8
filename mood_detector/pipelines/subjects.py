"""Generated subjects of a kind: the one place that picks the generator for ``brain`` / ``abdom``."""

from __future__ import annotations

from pathlib import Path

from mood_detector.kinds import get_kind


def check_templates(kind: str, templates: str, randomise: bool = False) -> None:
    """Raise ``ValueError`` or ``RuntimeError`` (not installed) for brain ``templates`` that cannot be used;
    abdominal phantoms have none."""
    if kind != "brain":
        return
    if randomise:
        from mood_detector.data.brain_random import resolve_sources

        resolve_sources(templates)
    else:
        from mood_detector.data.brain import resolve_templates

        resolve_templates(templates)


def make_subjects(kind: str, out: Path, n: int, size: int | None = None, seed: int = 0, start: int = 0,
                  templates: str = "default", randomise: bool = False) -> list[Path]:
    """Write ``n`` generated subjects of ``kind`` (``size``^3, default the kind's size) as ``{start:05d}.nii.gz``
    ... into ``out``; subject k depends only on (seed, k). ``brain``: real T1 templates under random deformation
    (``templates``); ``abdom``: the procedural phantom. ``randomise``: a random appearance per subject (the
    domain-randomised data; ``templates`` then names the brain's source images)."""
    size = size or get_kind(kind).size
    if kind == "brain" and randomise:
        from mood_detector.data.brain_random import make_random_brain_data

        return make_random_brain_data(out, n, size, seed, start, templates)
    if kind == "brain":
        from mood_detector.data.brain import make_brain_data

        return make_brain_data(out, n, size, seed, start, templates)
    if randomise:
        from mood_detector.data.abdomen_random import make_random_abdomen_data

        return make_random_abdomen_data(out, n, size, seed, start)
    from mood_detector.data.abdomen import make_abdomen_data

    return make_abdomen_data(out, n, size, seed, start)
