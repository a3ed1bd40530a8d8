import stat

import pytest

from mood_detector.io.atomic import atomic_open, atomic_path


def _mode(p):
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_open_publishes_only_a_finished_file(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_open(target, binary=False) as fh:
        fh.write("hello")
        assert not target.exists()  # not visible while being written
    assert target.read_text() == "hello" and _mode(target) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_an_error_while_writing_leaves_neither_file_nor_temporary(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_open(target) as fh:
            fh.write(b"partial")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_an_error_keeps_the_previous_version(tmp_path):
    target = tmp_path / "w.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            open(tmp, "wb").write(b"new, half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["w.bin"]


def test_atomic_path_can_keep_the_file_private(tmp_path):
    target = tmp_path / "checkpoint.pt"
    with atomic_path(target, mode=None) as tmp:
        open(tmp, "wb").write(b"x")
    assert _mode(target) == 0o600
