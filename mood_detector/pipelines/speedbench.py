"""End-to-end inference speed of the predictor against the I/O floor, as one table (``mood-detector
benchmark-speed``).

For a folder of N volumes of one kind (generated when no input folder is given) it measures, in one run:

(a) the I/O floor: reading every input with the package's reader and writing a same-size score volume (the
    pixel prediction of (b), loaded untimed) with the package's writer, one volume after the other;
(b) the full ``predict pixel`` and ``predict sample`` through the library's :class:`Predictor`;
(c) the per-stage breakdown of (b) pixel from ``Predictor.timings`` (read and write run in their own
    threads, overlapping the network, so the stages add up to more than the wall time);
(d) the naive forward: every slice at full field of view, fp32, default memory format, no empty-slice skip,
    no crop (network time only), against the full pixel task per volume; plus how far the optimised output is
    from the naive one (on empty slices, foreground, background);
(e) the gzip writers on the first score map: nibabel's default, stdlib gzip, ISA-L igzip (the package's
    writer), zlib-ng, and both libraries' multithreaded block compression (each output read back with nibabel
    and compared);
(f) peak resident memory of one worker scoring one volume (fresh child process, one reader, one writer), for
    brain and abdomen at full size with a narrow network (``memory_width``), as RSS and as float32 volume
    copies (``tracemalloc`` peak of NumPy/Python allocations; torch's own buffers are not traced).

Every ratio is against (a) of the same run, except (d) (against the naive forward) and (e) (against nibabel's
default writer). The model is the given weights or a randomly initialised FPI network of ``width``
(1 = the full reference model).
"""

from __future__ import annotations

import io
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mood_detector.errors import MoodError

log = logging.getLogger(__name__)

KIND_SIZE = {"brain": 256, "abdom": 512}
MEMORY_PROBES = {"both": ["brain", "abdom"], "brain": ["brain"], "abdom": ["abdom"], "none": []}


@dataclass
class SpeedConfig:
    """Settings of one speed benchmark run (the options of ``mood-detector benchmark-speed``)."""

    kind: str = "brain"
    input: Path | None = None          # folder of volumes (the first n_volumes are used); None = generate
    n_volumes: int = 4
    size: int | None = None            # generated edge and random model's slice size; None = the kind's size
    width: float = 1.0                 # random model's channel multiplier
    mode: str = "discrete"             # random model's mode
    weights: Path | None = None        # trained .safetensors instead of a random model
    device: str = "auto"
    batch_size: int = 0                # 0 = automatic
    threads: int = 0                   # torch CPU threads, 0 = all cores
    naive_volumes: int = 0             # naive forward on the first K volumes only, 0 = all
    gzip: bool = True                  # run the gzip writer comparison (e)
    memory: str = "both"               # memory probes (f): both, brain, abdom, none
    memory_width: float = 0.0625       # width of the memory probes' model
    workdir: Path | None = None        # work folder (kept); None = a temporary one
    keep: bool = False                 # keep the temporary work folder
    json: Path | None = None           # also write every number to this JSON file
    seed: int = 0                      # seed of the generated volumes


@dataclass
class Row:
    """One table row: part (a-f), what, value text, ratio, note."""

    part: str
    what: str
    value: str
    ratio: str = ""
    note: str = ""


@dataclass
class SpeedResults:
    """The table's header and rows plus every raw number."""

    header: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(self, part: str, what: str, value: str, ratio: float | str | None = None, note: str = "") -> None:
        r = f"{ratio:.2f}x" if isinstance(ratio, float) else (ratio or "")
        self.rows.append(Row(part, what, value, r, note))

    def table(self) -> str:
        """Two header lines (run settings, machine) and a Markdown table."""
        h = self.header
        lines = [f"benchmark-speed: kind={h['kind']} volumes={h['n']} shape={h['shape']} model=fpi {h['model']} "
                 f"net={h['net_size']}^2 batch={h['batch']}",
                 f"device={h['device']} threads={h['threads']} torch={h['torch']} python={h['python']} "
                 f"load average {h['load_start']} -> {h['load_end']}",
                 "", "| part | measurement | value | ratio | note |", "|---|---|---:|---:|---|"]
        lines += [f"| {r.part} | {r.what} | {r.value} | {r.ratio} | {r.note} |" for r in self.rows]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"header": self.header, "rows": [r.__dict__ for r in self.rows], "raw": self.raw},
                          indent=2, default=str) + "\n"


def _secs(x: float) -> str:
    return f"{x:.2f} s"


def _load() -> str:
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or "cpu"


# --- data and model ---------------------------------------------------------------------------------------
def make_inputs(kind: str, n: int, size: int, out: Path, seed: int) -> list[Path]:
    """``n`` generated volumes of ``kind`` (``size``^3) in ``out``."""
    from mood_detector.pipelines.subjects import make_subjects

    return make_subjects(kind, out, n, size, seed)


def random_model(kind: str, size: int, width: float, mode: str, path: Path) -> Path:
    """A randomly initialised FPI model saved to ``path`` (loaded back like real weights)."""
    from mood_detector.detector import TrainConfig
    from mood_detector.models.fpi.detector import FPIDetector

    card = FPIDetector.card_for(TrainConfig(kind=kind, size=size, width=width, options={"mode": mode}), 0)
    card.training_data = "random initialisation (speed benchmark)"
    return FPIDetector.build(card).save(path)


# --- (d) the naive forward --------------------------------------------------------------------------------
def naive_forward(det: Any, slices: Any, batch: int, device: Any) -> tuple[Any, float]:
    """Every slice, full field of view, fp32: pixel scores (S, H, W) and the seconds the network took."""
    import numpy as np
    import torch

    n = slices.shape[0]
    out = np.empty(slices.shape, dtype=np.float32)
    secs = 0.0
    with torch.inference_mode():
        for i in range(0, n, batch):
            x = torch.from_numpy(np.ascontiguousarray(slices[i:i + batch], dtype=np.float32))[:, None]
            t0 = time.perf_counter()
            p = det.score_slices(x.to(device)).pixel.float().clamp(0, 1).cpu().numpy()
            secs += time.perf_counter() - t0
            out[i:i + batch] = p
    return out, secs


# --- (e) gzip writers -------------------------------------------------------------------------------------
class SequentialWriter(io.RawIOBase):
    """Lets nibabel write to a stream that cannot seek (the threaded gzip writers): ``tell`` counts the bytes
    written, ``seek`` to the current position is a no-op and forward seeks write zeros, as ``GzipFile`` does."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self.stream, self.pos = stream, 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = self.stream.write(data)
        self.pos += len(memoryview(data).cast("B"))
        return n

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        target = pos if whence == 0 else self.pos + pos
        if target < self.pos or whence == 2:
            raise OSError("backward seek on a sequential writer")
        if target > self.pos:
            self.write(b"\0" * (target - self.pos))
        return self.pos

    def flush(self) -> None:
        if not self.closed:
            self.stream.flush()

    def close(self) -> None:
        if not self.closed:
            super().close()  # flushes
            self.stream.close()


def gzip_variants(threads: int) -> list[tuple[str, Callable[[Any], Any] | None]]:
    """(name, stream factory over a binary file); ``None`` = ``nibabel.save``."""
    import gzip

    from isal import igzip, igzip_threaded

    out: list[tuple[str, Callable[[Any], Any] | None]] = [
        ("nibabel.save (its default: stdlib zlib, level 1)", None),
        ("stdlib gzip level 6", lambda f: gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6, mtime=0)),
        ("stdlib gzip level 1", lambda f: gzip.GzipFile(fileobj=f, mode="wb", compresslevel=1, mtime=0)),
        ("isal igzip level 1 (package writer)", lambda f: igzip.IGzipFile(fileobj=f, mode="wb", compresslevel=1,
                                                                           mtime=0)),
        (f"isal igzip_threaded level 1, {threads} threads",
         lambda f: SequentialWriter(igzip_threaded.open(f, "wb", compresslevel=1, threads=threads))),
    ]
    try:
        from zlib_ng import gzip_ng, gzip_ng_threaded

        out += [("zlib-ng level 1", lambda f: gzip_ng.GzipNGFile(fileobj=f, mode="wb", compresslevel=1, mtime=0)),
                (f"zlib-ng threaded level 1, {threads} threads",
                 lambda f: SequentialWriter(gzip_ng_threaded.open(f, "wb", compresslevel=1, threads=threads)))]
    except ImportError:  # zlib-ng is a dev requirement only
        log.info("zlib-ng not installed: its gzip rows are left out")
    return out


def bench_gzip(data: Any, affine: Any, header: Any, out_dir: Path, threads: int, res: SpeedResults) -> None:
    """Write ``data`` with every variant (timed: serialisation, compression, fsync), read back and compare."""
    import nibabel as nib
    import numpy as np

    from mood_detector.io.nifti import _result_image

    out_dir.mkdir(parents=True, exist_ok=True)
    img = _result_image(data, affine, header)
    ref_secs = None
    for i, (name, factory) in enumerate(gzip_variants(threads)):
        path = out_dir / f"v{i}.nii.gz"
        t0 = time.perf_counter()
        if factory is None:
            nib.save(img, str(path))
        else:
            with open(path, "wb") as raw:
                stream = factory(raw)
                try:
                    img.to_file_map(img.make_file_map({"image": stream}))
                finally:
                    stream.close()
                raw.flush()
                os.fsync(raw.fileno())
        secs = time.perf_counter() - t0
        back = np.asarray(nib.load(str(path)).dataobj)
        ok = back.shape == data.shape and np.array_equal(back, data)
        ref_secs = ref_secs or secs
        res.add("e", f"gzip: {name}", _secs(secs), ref_secs / secs if secs else None,
                f"{path.stat().st_size / 1e6:.1f} MB; nibabel reads it back {'equal' if ok else 'DIFFERENT'}")
        res.raw.setdefault("gzip", []).append({"writer": name, "seconds": secs, "bytes": path.stat().st_size,
                                               "roundtrip_equal": ok})
        path.unlink()


# --- (f) memory probe (child process) ---------------------------------------------------------------------
def _rss_mib(field_name: str = "VmRSS") -> float:
    """This process's resident memory (``VmRSS``) or its peak (``VmHWM``) in MiB, from /proc.

    The peak is read from ``VmHWM``, not ``getrusage().ru_maxrss``: Linux carries ``ru_maxrss`` over from the
    forked parent across exec, so a probe started by a large parent would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_probe(kind: str, volume: Path, width: float, out: Path, batch: int,
                 size: int | None = None) -> dict[str, Any]:
    """Run in a fresh process: peak RSS and traced NumPy peak while one worker (one reader, one writer)
    scores ``volume`` (pixel task) with a ``width`` FPI model of ``kind`` (slice size ``size``, default the
    kind's)."""
    import tracemalloc

    import nibabel as nib
    import numpy as np
    import torch

    from mood_detector.detector import TrainConfig
    from mood_detector.inference.predictor import PredictConfig, Predictor
    from mood_detector.io.nifti import list_volumes
    from mood_detector.models.fpi.detector import FPIDetector

    det = FPIDetector.build(FPIDetector.card_for(TrainConfig(kind=kind, width=width, size=size), 0))
    pred = Predictor(det, PredictConfig(tasks=("pixel",), device="cpu", batch_size=batch, prefetch=1, writers=1,
                                        progress=False))
    with torch.inference_mode():  # warm-up: allocator and oneDNN set-up are not the pipeline's memory
        det.score_slices(torch.zeros(batch, 1, det.size, det.size))
    base = _rss_mib()
    tracemalloc.start()
    t0 = time.perf_counter()
    rep = pred.predict_files([volume], out)
    secs = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = _rss_mib("VmHWM")
    shape = tuple(int(s) for s in nib.load(str(volume)).shape)
    vol_bytes = 4 * int(np.prod(shape))
    if rep.exit_code != 0 or not list_volumes(out):
        raise RuntimeError(f"memory probe: prediction failed: {rep.failed}")
    return {"kind": kind, "shape": shape, "width": width, "batch": batch, "seconds": secs, "base_rss_mib": base,
            "peak_rss_mib": peak, "rss_growth_copies": (peak - base) * 2**20 / vol_bytes,
            "traced_peak_copies": traced_peak / vol_bytes, "volume_mib": vol_bytes / 2**20}


def run_memory_probes(kinds: list[str], width: float, work: Path, seed: int, res: SpeedResults,
                      size: int | None = None) -> None:
    """(f): one fresh child process per kind (``python -m mood_detector.pipelines.speedbench``) scoring one
    volume of ``size``^3 (default: the kind's full size) found in or generated into ``work/mem_<kind>``."""
    for kind in kinds:
        edge = size or KIND_SIZE[kind]
        src = work / f"mem_{kind}"
        if not any(src.glob("*.nii.gz")):
            make_inputs(kind, 1, edge, src, seed)
        volume = sorted(src.glob("*.nii.gz"))[0]
        cmd = [sys.executable, "-m", __name__, kind, str(volume), str(width), str(work / f"mem_{kind}_out"), "8",
               str(edge)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            log.warning("memory probe %s failed: %s", kind, last)
            res.add("f", f"peak RSS, {kind}", "failed", note=last[:120])
            continue
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        res.raw.setdefault("memory", []).append(m)
        res.add("f", f"peak RSS of one worker, {kind} {'x'.join(map(str, m['shape']))} (width {width})",
                f"{m['peak_rss_mib']:.0f} MiB", "",
                f"{m['base_rss_mib']:.0f} MiB before the volume; growth = {m['rss_growth_copies']:.2f} float32 volume "
                f"copies ({m['volume_mib']:.0f} MiB each); traced NumPy peak = {m['traced_peak_copies']:.2f} copies; "
                f"{m['seconds']:.1f} s")


# --- the benchmark ----------------------------------------------------------------------------------------
def run_speed_benchmark(cfg: SpeedConfig) -> SpeedResults:
    """Run parts (a)-(f) and return the table; writes ``cfg.json`` when given. Raises :class:`MoodError` for
    an input folder without volumes or a prediction that fails."""
    import numpy as np
    import torch

    from mood_detector.detector import load_detector, resolve_device
    from mood_detector.inference.accel import set_cpu_threads
    from mood_detector.inference.predictor import PredictConfig, Predictor
    from mood_detector.io.nifti import list_volumes, read_volume, write_volume
    from mood_detector.preprocess import prepare, resample, scheme_of, to_slices

    if cfg.memory not in MEMORY_PROBES:
        raise MoodError(f"memory must be one of {sorted(MEMORY_PROBES)}, not {cfg.memory!r}")
    device = resolve_device(cfg.device)
    threads = set_cpu_threads(cfg.threads) if device.type == "cpu" else torch.get_num_threads()
    work = Path(cfg.workdir) if cfg.workdir else Path(tempfile.mkdtemp(prefix="benchmark_speed_"))
    work.mkdir(parents=True, exist_ok=True)
    res = SpeedResults()
    load_start = _load()
    try:
        size = cfg.size or KIND_SIZE[cfg.kind]
        t0 = time.perf_counter()
        if cfg.input is not None:
            files = list_volumes(cfg.input)[: cfg.n_volumes]
            if not files:
                raise MoodError(f"{cfg.input}: no .nii/.nii.gz volumes")
        else:
            log.info("generating %d %s volumes (%d^3) in %s", cfg.n_volumes, cfg.kind, size, work / "in")
            files = make_inputs(cfg.kind, cfg.n_volumes, size, work / "in", cfg.seed)
        gen_secs = time.perf_counter() - t0
        weights = cfg.weights or random_model(cfg.kind, size, cfg.width, cfg.mode, work / "fpi.safetensors")
        det = load_detector(weights, device)
        card = det.card
        n = len(files)
        pred_kw = dict(device=str(device), batch_size=cfg.batch_size, threads=threads, progress=False)

        # (b) full tasks through the library
        log.info("(b) predict pixel and sample")
        walls: dict[str, float] = {}
        timings: dict[str, float] = {}
        predictor = None
        for task in ("pixel", "sample"):
            predictor = Predictor(det, PredictConfig(tasks=(task,), **pred_kw))
            t0 = time.perf_counter()
            rep = predictor.predict_files(files, work / f"pred_{task}")
            walls[task] = time.perf_counter() - t0
            if rep.failed:
                raise MoodError(f"predict {task} failed: {rep.failed}")
            if task == "pixel":
                timings = predictor.timings.as_dict()
        batch = next(iter(predictor.batch_sizes.values())) if predictor and predictor.batch_sizes else cfg.batch_size

        # (a) the I/O floor: read each input, write a same-size score volume (the pixel prediction)
        log.info("(a) I/O floor")
        floor_read = floor_write = 0.0
        (work / "floor").mkdir(exist_ok=True)
        shape = None
        for f in files:
            t0 = time.perf_counter()
            vol = read_volume(f, PredictConfig().limits)
            floor_read += time.perf_counter() - t0
            shape = vol.shape
            score = read_volume(work / "pred_pixel" / f.name).data  # untimed: the map to write
            t0 = time.perf_counter()
            write_volume(work / "floor" / f.name, score, vol.affine, vol.header, compresslevel=1)
            floor_write += time.perf_counter() - t0
            del vol, score
        floor = floor_read + floor_write

        device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
        res.header = {"kind": cfg.kind, "n": n, "shape": "x".join(map(str, shape)), "net_size": card.size,
                      "model": f"width={card.width} {card.mode} ({'random init' if cfg.weights is None else weights})",
                      "batch": batch, "device": f"{device} ({device_name})",
                      "threads": threads, "torch": torch.__version__, "python": platform.python_version(),
                      "load_start": load_start, "load_end": "", "generate_s": gen_secs}
        res.add("a", "I/O floor: read every input + write a same-size score volume", _secs(floor), 1.0,
                f"{floor / n:.2f} s/volume (read {floor_read:.2f} s, write {floor_write:.2f} s), sequential")
        res.add("b", "predict pixel (library Predictor, wall)", _secs(walls["pixel"]), walls["pixel"] / floor,
                f"{walls['pixel'] / n:.2f} s/volume")
        res.add("b", "predict sample (library Predictor, wall)", _secs(walls["sample"]), walls["sample"] / floor,
                f"{walls['sample'] / n:.2f} s/volume")
        for stage in ("read", "preprocess", "network", "postprocess", "write"):
            res.add("c", f"pixel stage: {stage}", _secs(timings.get(stage, 0.0)), timings.get(stage, 0.0) / floor,
                    "reader threads" if stage == "read" else "writer threads" if stage == "write" else "")

        # (d) naive forward vs the optimised path, and how far apart their outputs are
        k = min(n, cfg.naive_volumes or n)
        log.info("(d) naive forward on %d volume(s)", k)
        naive_det = load_detector(weights, device)  # default memory format, no capability shortcuts
        naive_secs = 0.0
        diffs = {"empty": 0.0, "foreground": 0.0, "background": 0.0, "mean": 0.0}
        comparable = True
        for f in files[:k]:
            data = read_volume(f, PredictConfig().limits).data
            norm, mask = prepare(data, inplace=True, scheme=scheme_of(card.extra))
            net = resample(norm, (card.size,) * 3)
            slices = to_slices(net, card.slice_axis)
            pix, secs = naive_forward(naive_det, slices, batch, device)
            if tuple(net.shape) == tuple(data.shape):  # the predictor zeroes the background: so does this
                pix[~to_slices(mask, card.slice_axis)] = 0.0
            del norm, mask
            naive_secs += secs
            if tuple(net.shape) != tuple(data.shape):
                comparable = False
                continue
            fast = to_slices(read_volume(work / "pred_pixel" / f.name).data, card.slice_axis)
            d = np.abs(pix - fast)
            empty = slices.max(axis=(1, 2)) <= 0
            fg = slices > 0
            diffs["empty"] = max(diffs["empty"], float(d[empty].max()) if empty.any() else 0.0)
            diffs["foreground"] = max(diffs["foreground"], float(d[fg].max()) if fg.any() else 0.0)
            bg = ~fg & ~empty[:, None, None]
            diffs["background"] = max(diffs["background"], float(d[bg].max()) if bg.any() else 0.0)
            diffs["mean"] += float(d.mean()) / k
            res.raw.setdefault("empty_slices", []).append(int(empty.sum()))
            del data, net, slices, pix, fast, d
        per_naive = naive_secs / k
        res.add("d", f"naive forward: all slices, full FOV, fp32 (first {k} volume(s), network only)",
                _secs(naive_secs), naive_secs / k * n / floor, f"{per_naive:.2f} s/volume")
        res.add("d", "predict pixel (everything) / naive forward, per volume", f"{walls['pixel'] / n:.2f} s",
                (walls["pixel"] / n) / per_naive, "target <= 0.50x on the CPU")
        res.add("d", "optimised network time / naive forward, per volume", f"{timings.get('network', 0) / n:.2f} s",
                (timings.get("network", 0.0) / n) / per_naive)
        if comparable:
            res.add("d", "max abs difference optimised vs naive: empty slices / foreground / background",
                    f"{diffs['empty']:.3g} / {diffs['foreground']:.3g} / {diffs['background']:.3g}", "",
                    f"mean {diffs['mean']:.3g}; " + ("random model: its output on blank input is not near 0"
                                                     if cfg.weights is None else "trained model"))
        res.raw["naive"] = {"volumes": k, "seconds": naive_secs, "diffs": diffs if comparable else None}

        # (e) gzip writers on the first score map
        if cfg.gzip:
            log.info("(e) gzip writers")
            vol = read_volume(files[0])
            score = read_volume(work / "pred_pixel" / files[0].name).data
            bench_gzip(score, vol.affine, vol.header, work / "gzip", max(2, threads), res)
            del vol, score

        # (f) memory per worker
        kinds = MEMORY_PROBES[cfg.memory]
        if kinds:
            log.info("(f) memory probes: %s", ", ".join(kinds))
        run_memory_probes(kinds, cfg.memory_width, work, cfg.seed, res)

        res.header["load_end"] = _load()
        res.raw.update({"walls": walls, "timings": timings, "floor": {"read": floor_read, "write": floor_write},
                        "header": res.header})
        if cfg.json:
            Path(cfg.json).write_text(res.to_json())
        return res
    finally:
        if cfg.workdir is None and not cfg.keep:
            shutil.rmtree(work, ignore_errors=True)


def _probe_main(argv: list[str]) -> None:
    """Child process of (f): ``KIND VOLUME WIDTH OUT BATCH SIZE``; prints one JSON line."""
    kind, volume, width, out, batch, size = argv
    m = memory_probe(kind, Path(volume), float(width), Path(out), int(batch), int(size))
    sys.stdout.write(json.dumps(m) + "\n")


if __name__ == "__main__":
    _probe_main(sys.argv[1:])
