"""Every detector's overrides of the base class's methods take what the base method takes: the harness (export,
predict, train) calls them through the base class's signature."""

import inspect

import pytest

from mood_detector.detector import REGISTRY, Detector, detector_class

#: the constructor is each detector's own (``build`` is the common factory)
NOT_INTERFACE = {"__init__"}


def _params(fn) -> list[tuple[str, inspect._ParameterKind]]:
    fn = fn.fget if isinstance(fn, property) else getattr(fn, "__func__", fn)
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]


def _base_methods() -> dict[str, object]:
    return {n: v for n, v in vars(Detector).items()
            if n not in NOT_INTERFACE and (callable(v) or isinstance(v, (property, classmethod, staticmethod)))}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_overrides_take_the_base_methods_arguments(name: str):
    cls = detector_class(name)
    base = _base_methods()
    checked = []
    for klass in cls.__mro__[: cls.__mro__.index(Detector)]:
        for attr, value in vars(klass).items():
            if attr not in base:
                continue
            assert type(value) is type(base[attr]), f"{klass.__name__}.{attr}: {type(value).__name__}, the base " \
                                                    f"has {type(base[attr]).__name__}"
            assert _params(value) == _params(base[attr]), f"{klass.__name__}.{attr}{inspect.signature(value)}"
            checked.append(attr)
    assert {"build", "modules", "score_slices", "fit"} <= set(checked)
