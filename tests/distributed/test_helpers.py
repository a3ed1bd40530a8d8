"""The distributed helpers in a single process: sharding, batch splitting, report merging, BatchNorm conversion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mood_detector import distributed
from mood_detector.detector import REGISTRY, TrainConfig
from mood_detector.inference.predictor import PredictReport
from mood_detector.inference.sharded import merge_reports
from mood_detector.training.api import train_detector


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 10])
def test_shard_takes_every_item_exactly_once(n: int, world: int):
    items = [f"f{i:02d}" for i in range(n)]
    shards = [distributed.shard(items, r, world) for r in range(world)]
    assert sorted(x for s in shards for x in s) == items
    assert all(len(s) in (n // world, -(-n // world)) for s in shards)
    assert shards[0] == items[0::world]


def test_without_torchrun_nothing_is_distributed(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    with distributed.session("cpu") as (env, device):
        assert env == distributed.DistEnv() and device == torch.device("cpu")
        assert not distributed.is_initialized() and distributed.is_main()
        assert distributed.all_gather_object(3) == [3] and distributed.broadcast_object("x") == "x"
        net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
        assert type(distributed.convert_sync_bn(net, device)[1]) is nn.BatchNorm2d
        distributed.barrier()
    assert not distributed.is_initialized()


def test_env_parsing(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert distributed.env_from_environ() == distributed.DistEnv(2, 4, 0)
    assert not distributed.env_from_environ().is_main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="inconsistent torchrun environment"):
        distributed.env_from_environ()


@pytest.mark.parametrize("world", [1, 2, 3])
def test_split_batch_gives_contiguous_parts_that_make_up_the_batch(world: int):
    x = torch.arange(7.0)
    parts = [distributed.split_batch((x, {"y": x * 2, "tag": "t"}), r, world) for r in range(world)]
    assert torch.equal(torch.cat([p[0][0] for p in parts]), x)
    assert all(torch.equal(p[0][1]["y"], p[0][0] * 2) and p[0][1]["tag"] == "t" for p in parts)
    assert [p[1] for p in parts] == [len(distributed.part_range(7, r, world)) for r in range(world)]
    assert all(p[2] == 7 for p in parts)


def test_split_batch_shares_out_whole_pieces_counted_by_their_sizes():
    pieces = distributed.Pieces(["a", "b", "c", "d"], [24, 16, 20, 8])
    parts = [distributed.split_batch(pieces, r, 2) for r in range(2)]
    assert [p[0].items for p in parts] == [["a", "b"], ["c", "d"]]
    assert [p[0].sizes for p in parts] == [[24, 16], [20, 8]]
    assert [(p[1], p[2]) for p in parts] == [(40, 68), (28, 68)]
    assert distributed.batch_units(pieces) == 4 and distributed.batch_units(torch.zeros(5, 2)) == 5
    whole, n_part, n = distributed.split_batch(pieces)  # one process: the whole batch
    assert whole.items == pieces.items and n_part == n == 68
    with pytest.raises(ValueError, match="3 pieces but 2 sizes"):
        distributed.Pieces([1, 2, 3], [1, 2])


def test_dist_batchnorm_is_plain_batchnorm_outside_a_group():
    bn = nn.BatchNorm2d(3)
    dbn = distributed.DistBatchNorm(3)
    dbn.load_state_dict(bn.state_dict())
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(dbn(x), bn(x))
    torch.testing.assert_close(dbn.running_var, bn.running_var)
    # conversion keeps parameters and buffers shared and is undone exactly
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    conv = distributed._convert(net, cuda=False)
    assert type(conv[1]) is distributed.DistBatchNorm and conv[1].weight is net[1].weight
    back = distributed.revert_sync_bn(conv)
    assert type(back[1]) is nn.BatchNorm2d and back[1].running_mean is conv[1].running_mean


def test_merge_reports_keeps_input_order_and_duplicates():
    files = [Path(f"/in/v{i}.nii.gz") for i in range(5)]
    r0 = PredictReport(scored=[files[0], files[2]], failed=[(files[4], "bad")], samples={"v0.nii.gz": 0.1})
    r1 = PredictReport(scored=[files[3], files[1]], skipped=[], samples={"v1.nii.gz": 0.2, "v3.nii.gz": 0.3})
    out = merge_reports(files, [r1, r0])
    assert out.scored == files[:4] and out.failed == [(files[4], "bad")] and out.exit_code == 1
    assert list(out.samples) == ["v0.nii.gz", "v1.nii.gz", "v3.nii.gz"]
    assert len(merge_reports(files, [r0, r0]).scored) == 4  # a file scored twice would show


def test_batches_per_step_must_divide_among_ranks_and_unsupported_detectors_refuse(tmp_path: Path, monkeypatch):
    from mood_detector.models.fpi.detector import FPIDetector

    cfg = TrainConfig(size=32, width=0.125, epochs=1, batch_size=4, device="cpu", options={"batches_per_step": "3"})
    monkeypatch.setattr(distributed, "current", lambda: distributed.DistEnv(0, 2, 0))
    monkeypatch.setattr(distributed, "init", lambda *a, **k: False)
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        FPIDetector.fit([tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"], cfg, tmp_path / "run")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.nii.gz").write_bytes(b"")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setitem(REGISTRY, "plain", "tests.distributed.test_helpers:PlainDetector")
    with pytest.raises(ValueError, match="does not support torchrun"):
        train_detector(tmp_path / "in", tmp_path / "w.safetensors", TrainConfig(detector="plain"))


class PlainDetector:
    """Stands in for a detector without ``supports_distributed``."""

    supports_distributed = False
