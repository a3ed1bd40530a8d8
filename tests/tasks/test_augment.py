import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mood_detector.tasks.augment import ContrastAugment


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_remap_keeps_background_range_and_is_shared(seed):
    rng = np.random.default_rng(seed)
    a = rng.random((3, 16, 16)).astype(np.float32)
    a[:, :4] = 0
    b = a[::-1].copy()
    aug = ContrastAugment(p=1.0, p_invert=0.5, p_curve=0.5)
    ra, rb = aug(np.random.default_rng(seed), a, b)
    for src, out in ((a, ra), (b, rb)):
        assert out.dtype == np.float32 and out.shape == src.shape
        assert np.all(out[src == 0] == 0)                       # background stays 0
        assert np.all((out[src > 0] >= aug.floor - 1e-6) & (out[src > 0] <= 1))
    # one draw for both stacks: equal inputs give equal outputs
    assert np.array_equal(ra, rb[::-1])


def test_inversion_turns_bright_into_dark():
    a = np.array([[0.0, 0.2, 0.9]], dtype=np.float32)
    aug = ContrastAugment(p=1.0, gamma=(1.0, 1.0), p_invert=1.0, p_curve=0.0)
    (out,) = aug(np.random.default_rng(0), a)
    assert out[0, 0] == 0 and out[0, 1] > out[0, 2]


def test_off_returns_inputs_unchanged():
    a = np.random.default_rng(1).random((2, 4, 4)).astype(np.float32)
    (out,) = ContrastAugment(p=0.0)(np.random.default_rng(0), a)
    assert out is a


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), p=st.sampled_from([0.0, 0.5, 1.0]))
def test_source_shift_translates_whole_slices(seed, p):
    from mood_detector.tasks.augment import SourceShift

    b = np.random.default_rng(seed).random((4, 20, 24)).astype(np.float32)
    shift = SourceShift(p=p)
    out = shift(np.random.default_rng(seed), b)
    assert out.shape == b.shape and out.dtype == b.dtype
    moved = 0
    for src, dst in zip(b, out):
        # each slice is its source rolled by some offset: same values, and one offset reproduces it exactly
        assert np.array_equal(np.sort(src, axis=None), np.sort(dst, axis=None))
        offsets = [(r, c) for r in range(20) for c in range(24) if np.array_equal(np.roll(src, (r, c), (0, 1)), dst)]
        assert offsets
        if offsets != [(0, 0)]:
            moved += 1
            r, c = offsets[0]
            lo = [round(0.05 * n) for n in (20, 24)]
            assert min(r, 20 - r) >= lo[0] and min(c, 24 - c) >= lo[1]  # at least the smallest offset
    if p == 0.0:
        assert out is b and moved == 0
    if p == 1.0:
        assert moved == 4
    assert np.array_equal(b, np.random.default_rng(seed).random((4, 20, 24)).astype(np.float32))  # input kept
