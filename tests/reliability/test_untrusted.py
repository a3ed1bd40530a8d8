"""Untrusted files never run code; NIfTI extensions are ignored (see test_bad_inputs); the
containers run as a non-root user and prediction needs no network."""

from __future__ import annotations

import ast
import pickle
import re
import socket
from pathlib import Path

import pytest
import torch

from mood_detector.detector import load_detector
from mood_detector.errors import WeightsError
from mood_detector.inference.predictor import PredictConfig, Predictor
from mood_detector.training.loop import CHECKPOINT, load_checkpoint
from mood_detector.weights import load_weights
from tests.conftest import blob_volume, save_nifti
from tests.reliability.helpers import predict_args, run_cli

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "mood_detector"


class Payload:
    """Unpickling this object creates ``marker`` (stand-in for arbitrary code execution)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_payload_is_live(tmp_path: Path):
    """Positive control: the payloads below really execute when unpickled unsafely."""
    m1, m2 = tmp_path / "pickle_ran", tmp_path / "torch_ran"
    pickle.loads(pickle.dumps(Payload(m1)))
    torch.save({"w": Payload(m2)}, tmp_path / "c.pt")
    torch.load(tmp_path / "c.pt", weights_only=False)
    assert m1.exists() and m2.exists()


@pytest.mark.parametrize("name,fmt", [
    ("evil.pt", "torch"), ("evil.pth", "torch"), ("evil.ckpt", "pickle"), ("evil.bin", "pickle"),
    ("evil.safetensors", "pickle"), ("evil.safetensors", "torch"), ("folder", "torch"),
])
def test_pickled_weights_are_refused_and_never_run(tmp_path: Path, name: str, fmt: str):
    marker = tmp_path / "code_ran"
    path = tmp_path / name
    target = path / "weights.pt" if name == "folder" else path
    target.parent.mkdir(exist_ok=True)
    if fmt == "torch":
        torch.save({"net.weight": Payload(marker)}, target)
    else:
        target.write_bytes(pickle.dumps({"net.weight": Payload(marker)}))
    if target.suffix == ".safetensors":  # give it a valid card so the loader really tries the tensor file
        target.with_suffix(".json").write_text('{"detector": "fpi", "arch": "brain", "width": 0.125, '
                                               '"kind": "brain", "slice_axis": 2, "size": 32}')
    with pytest.raises(WeightsError):
        load_weights(path)
    with pytest.raises(WeightsError):
        load_detector(path)
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "x.nii.gz", blob_volume((16, 16, 16)))
    res = run_cli(*predict_args("sample", inp, tmp_path / "out", path))
    assert res.exit_code == 2, res.stderr
    assert not marker.exists()


def test_malicious_training_checkpoint_is_refused(tmp_path: Path):
    """``--resume`` loads checkpoints with ``torch.load(weights_only=True)``: a pickle payload fails to load."""
    marker = tmp_path / "code_ran"
    torch.save({"epoch": 3, "model": Payload(marker)}, tmp_path / CHECKPOINT)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f"{f.value.id}.{f.attr}" if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
                else getattr(f, "id", "")
            yield name, node


def test_package_never_deserialises_unsafely():
    """Static check of every module: torch.load only with weights_only=True; no pickle/marshal/dill/joblib
    loading, no numpy allow_pickle, no eval/exec."""
    problems = []
    for py in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(py.read_text(encoding="utf-8"), str(py))
        for name, node in _calls(tree):
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{py.relative_to(REPO)}:{node.lineno}"
            if name == "torch.load":
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            elif name in ("pickle.load", "pickle.loads", "marshal.loads", "dill.load", "dill.loads",
                          "joblib.load", "cloudpickle.loads", "eval", "exec", "yaml.load"):
                problems.append(f"{where}: {name}")
            elif name in ("np.load", "numpy.load"):
                ap = kw.get("allow_pickle")
                if isinstance(ap, ast.Constant) and ap.value is True:
                    problems.append(f"{where}: np.load(allow_pickle=True)")
    assert not problems, problems


def _final_user(dockerfile: Path) -> str:
    user = ""
    for line in dockerfile.read_text().splitlines():
        s = line.strip()
        if re.match(r"(?i)^FROM\s", s):
            user = ""  # a new stage starts as root
        m = re.match(r"(?i)^USER\s+(\S+)", s)
        if m:
            user = m.group(1)
    return user


@pytest.mark.parametrize("rel", ["Dockerfile", "docker/train.Dockerfile"])
def test_containers_run_as_non_root(rel: str):
    path = REPO / rel
    if not path.is_file():
        pytest.skip(f"{rel} not present")
    user = _final_user(path)
    assert user, f"{rel}: no USER in the final stage (it would run as root)"
    assert user.split(":")[0] not in ("root", "0"), f"{rel}: runs as {user}"


def test_container_scripts_fetch_nothing():
    scripts = [p for p in [REPO / "Dockerfile", *sorted((REPO / "docker").glob("*.sh"))] if p.is_file()]
    if not scripts:
        pytest.skip("no container scripts present")
    for p in scripts:
        if p.name == "Dockerfile":
            text = "\n".join(ln for ln in p.read_text().splitlines() if ln.strip().upper().startswith(
                ("ENTRYPOINT", "CMD")))  # build steps may download; what runs in the container may not
        elif p.name == "install.sh":
            continue  # runs at image build time
        else:
            text = p.read_text()
        for word in ("curl ", "wget ", "pip install", "git clone", "http://", "https://"):
            assert word not in text, f"{p.relative_to(REPO)} uses {word.strip()!r} at run time"


def test_prediction_needs_no_network(tmp_path: Path, tiny_fpi: Path, monkeypatch):
    """Loading weights and scoring a folder with every socket creation refused."""
    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "x.nii.gz", blob_volume((16, 16, 16)))
    rep = Predictor(load_detector(tiny_fpi), PredictConfig(tasks=("pixel", "sample"), device="cpu",
                                                           progress=False)).predict_folder(inp, tmp_path / "out")
    assert rep.exit_code == 0 and len(rep.scored) == 1
