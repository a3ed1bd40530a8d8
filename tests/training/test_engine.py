"""The training engine: phases, resume inside a phase, checkpoint cadence, the loss log, the empty-epoch check."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from mood_detector.training.engine import Engine, Phase, Step
from mood_detector.training.loop import LossLog, load_checkpoint


@dataclass
class Cfg:
    seed: int = 0


def _train(run_dir: Path, epochs: tuple[int, int], resume: bool = False) -> torch.nn.Linear:
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    engine = Engine(run_dir, Cfg(), {"net": net, "opt": opt}, resume_enabled=resume)
    start = engine.resume()

    def batches(epoch: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(epoch)  # per-epoch stream
        return [torch.rand(4, 2, generator=g) for _ in range(3)]

    def step(x: torch.Tensor, epoch: int, index: int) -> Step | None:
        if index == 2:
            return None  # skipped: not counted
        opt.zero_grad()
        loss = net(x).pow(2).mean()
        loss.backward()
        opt.step()
        return Step({"loss": loss, "other": 1.0}, len(x))

    a, b = epochs
    engine.run([Phase("one", range(a), batches, step), Phase("two", range(a, a + b), batches, step)], start)
    return net


def test_two_phases_log_and_resume_to_the_same_weights(tmp_path: Path):
    full = _train(tmp_path / "full", (2, 2))
    rows = LossLog(tmp_path / "full").rows()
    assert [(r["phase"], r["epoch"], r["batches"]) for r in rows] == [
        ("one", "1", "2"), ("one", "2", "2"), ("two", "3", "2"), ("two", "4", "2")]
    assert float(rows[0]["lr"]) == 0.1
    _train(tmp_path / "part", (2, 1))  # stopped inside the second phase
    assert load_checkpoint(tmp_path / "part")["epoch"] == 3
    resumed = _train(tmp_path / "part", (2, 2), resume=True)
    assert all(torch.equal(p, q) for p, q in zip(full.state_dict().values(), resumed.state_dict().values()))
    assert [r["epoch"] for r in LossLog(tmp_path / "part").rows()] == ["1", "2", "3", "4"]


def test_an_epoch_without_steps_is_an_error(tmp_path: Path):
    net = torch.nn.Linear(1, 1)
    engine = Engine(tmp_path, Cfg(), {"net": net})
    with pytest.raises(ValueError, match="no training batches"):
        engine.run([Phase("x", range(1), lambda e: [], lambda b, e, i: None)])


def test_checkpoint_cadence_and_a_stage_resumed_only_under_the_same_config(tmp_path: Path, monkeypatch):
    from mood_detector.training import engine as engine_module

    saved: list[int] = []
    real = engine_module.save_checkpoint
    monkeypatch.setattr(engine_module, "save_checkpoint", lambda d, s: (saved.append(s["epoch"]), real(d, s))[1])
    net = torch.nn.Linear(1, 1)
    phase = Phase("x", range(5), lambda e: [0], lambda b, e, i: Step({"loss": 0.0}, 1))
    Engine(tmp_path, "a", {"net": net}, every_epochs=2).run([phase])
    assert saved == [2, 4, 5]  # every 2nd epoch and the phase's last
    assert Engine(tmp_path, "a", {"net": net}, resume_enabled=True, same_config=True).resume() == 5
    assert Engine(tmp_path, "b", {"net": net}, resume_enabled=True, same_config=True).resume() == 0
    assert Engine(tmp_path, "a", {"net": net}, resume_enabled=True).resume(epochs=4) == 0  # more than asked for
