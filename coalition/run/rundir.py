"""A run directory: who owns it, atomic file writes, JSONL records, and a manifest of finished
stages.

Every stage writes its outputs through :func:`atomic_write` and then records itself in
``manifest.json``; a rerun with the same directory skips stages the manifest lists. ``run.json``
names the job that owns the directory, so no other job writes over it; a lock file keeps two
processes from running in it at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from coalition.data.records import Prediction, from_row, to_row
from coalition.method.variants import variant_key
from coalition.run import config as config_mod
from coalition.run.config import Config, ConfigError

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
_TMP = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")  # what atomic_write leaves if killed mid-write
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one (with
    the usual permissions: a run directory on a shared disk stays readable by the group)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes it 0600
        with os.fdopen(fd, mode) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        if (written := getattr(_recording, "paths", None)) is not None:
            written.append(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_recording = threading.local()


@contextmanager
def recording() -> Iterator[list[Path]]:
    """Collect the paths :func:`atomic_write` writes in this thread (a stage's outputs)."""
    outer = getattr(_recording, "paths", None)
    _recording.paths = paths = []
    try:
        yield paths
    finally:
        _recording.paths = outer
        if outer is not None:
            outer.extend(paths)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically, with floats at 12 significant digits (a mean
    of 0.30025 is stored as that, not as 0.30024999999999974)."""
    atomic_write(path, json.dumps(_tidy(obj), indent=2, sort_keys=False, default=str) + "\n")


def _tidy(obj: Any) -> Any:
    if isinstance(obj, float):
        return float(f"{obj:.12g}")
    if isinstance(obj, dict):
        return {k: _tidy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_tidy(v) for v in obj]
    return obj


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write plain dict rows as JSONL, atomically."""
    atomic_write(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def write_records(path: Path, records: Iterable[Any]) -> None:
    """Write typed records as JSONL (one tagged row per line), atomically."""
    lines = [json.dumps(to_row(r), ensure_ascii=False) for r in records]
    atomic_write(path, "".join(line + "\n" for line in lines))


def read_records(path: Path, cls: type) -> list[Any]:
    """Read JSONL written by :func:`write_records`; a bad line names the file and line."""
    return list(_iter_records(Path(path), cls))


def _iter_records(path: Path, cls: type) -> Iterator[Any]:
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
            yield from_row(cls, row, where)


class Manifest:
    """The finished stages of a run and the files each wrote, persisted as ``manifest.json``."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self.path = self.dir / "manifest.json"
        self.stages: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, list[str]] = {}
        if self.path.exists():
            self.stages = read_manifest(self.path)
            self.outputs = json.loads(self.path.read_text()).get("outputs", {})

    def done(self, stage: str) -> bool:
        return stage in self.stages

    def mark(self, stage: str, outputs: Iterable[Path] = (), **info: Any) -> None:
        self.stages[stage] = {"finished_at": time.time(), **info}
        root = self.dir.resolve()
        rel = {os.path.relpath(Path(p).resolve(), root) for p in outputs}
        self.outputs[stage] = sorted(r for r in rel if not r.startswith(".."))
        self._write()

    def damaged(self, stage: str) -> str | None:
        """The first output of a finished ``stage`` that is missing or cannot be read (None:
        all are there): such a stage is redone rather than trusted."""
        for rel in self.outputs.get(stage, []):
            path = self.dir / rel
            if not path.is_file():
                return f"{rel} is missing"
            if path.suffix == ".safetensors":  # a state or the controller: is it all there?
                from coalition.run.checkpoints import check_safetensors

                try:
                    check_safetensors(path)
                except ConfigError:
                    return f"{rel} is damaged"
        return None

    def adopt(self, stage: str, source: Manifest) -> None:
        """Take ``source``'s finished ``stage`` as this run's own: its outputs linked (copied
        where links cannot be made) to the same paths here, its record noting where it came
        from. How arms of an ablation share the stages they have in common."""
        if source.damaged(stage) is not None:
            raise ConfigError(f"{source.dir}: stage {stage} is {source.damaged(stage)}")
        for rel in source.outputs.get(stage, []):
            src, dst = source.dir / rel, self.dir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.unlink(missing_ok=True)
            try:
                os.link(src, dst)
            except OSError:  # another file system, or one without hard links
                atomic_write(dst, src.read_bytes())
        origin = os.path.relpath(source.dir.resolve(), self.dir.resolve())
        self.stages[stage] = {**source.stages[stage], "adopted_from": origin}
        self.outputs[stage] = list(source.outputs.get(stage, []))
        self._write()

    def forget(self, stage: str) -> None:
        """Drop ``stage`` from the finished ones, so it is redone."""
        self.stages.pop(stage, None)
        self.outputs.pop(stage, None)
        self._write()

    def _write(self) -> None:
        write_json(self.path, {"stages": self.stages, "outputs": self.outputs})

    def info(self, stage: str) -> dict[str, Any]:
        return self.stages[stage]


def read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """The finished stages in ``manifest.json``; an unreadable one names itself and the fix."""
    try:
        stages = json.loads(path.read_text(encoding="utf-8"))["stages"]
        if not isinstance(stages, dict):
            raise TypeError
        return stages
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{path} is damaged (truncated or edited): it lists the run's finished stages. "
            "Restore it, or delete it to redo every stage (outputs already there are rewritten)"
        ) from None


# --------------------------------------------------------------------------- who owns a directory


@dataclass(frozen=True)
class RunInfo:
    """``run.json``: the job that owns a run directory."""

    job: str
    created: float

    kind: ClassVar[str] = "run"


def owner(path: Path) -> str | None:
    """The job whose run ``path`` holds ("train", "evaluate", …); None when it holds no finished
    work (nothing to protect); "unknown" for a coalition run of no known job; "foreign" for
    a non-empty directory that is not a coalition run at all."""
    path = Path(path)
    if not path.is_dir() or not any(p.name != LOCK_FILE for p in path.iterdir()):
        return None
    if not (path / "config.yaml").exists() and not (path / RUN_FILE).exists():
        return "foreign"
    manifest = path / "manifest.json"
    stages = read_manifest(manifest) if manifest.exists() else {}
    has_arms = (path / "arms").is_dir() and any((path / "arms").iterdir())  # jobs/ablate.py
    if not stages and not (path / "summary.json").exists() and not has_arms:
        return None
    if (path / RUN_FILE).exists():
        try:
            row = json.loads((path / RUN_FILE).read_text(encoding="utf-8"))
            return from_row(RunInfo, row, str(path / RUN_FILE)).job
        except (ValueError, TypeError):
            raise ConfigError(
                f"{path / RUN_FILE} is damaged; it names the job that owns {path}. Restore it "
                f'or write {{"job": "<train|distill|saie|evaluate>", "created": 0}} into it'
            ) from None
    return _legacy_owner(path, stages)


def _legacy_owner(path: Path, stages: dict[str, Any]) -> str:
    """A run written before ``run.json`` existed, recognised by what it holds."""
    for prefix, job in (("v0-", "train"), ("learner-", "saie"), ("student-", "distill")):
        if any((path / "states").glob(f"{prefix}*")):
            return job
    if (path / "summary.json").exists():
        try:
            return str(json.loads((path / "summary.json").read_text())["job"])
        except (ValueError, KeyError, TypeError):
            pass
    if any(name.startswith("teacher") for name in stages):
        return "distill"
    return "unknown"


def describe(path: Path) -> str:
    """What a run directory holds, in a few words (for refusals)."""
    names = sorted(p.name for p in Path(path).iterdir() if p.name != LOCK_FILE)
    shown = ", ".join(names[:6]) + (", …" if len(names) > 6 else "")
    return shown or "nothing"


def mark_owner(path: Path, job: str) -> None:
    write_json(Path(path) / RUN_FILE, to_row(RunInfo(job, round(time.time(), 3))))


def check_creatable(path: Path) -> None:
    """Refuse a run directory that is a file or cannot be made (before anything is written)."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"run_dir {path} is a file; give a directory (new or a run's)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"run_dir {path}: no permission to write there")
        return
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"run_dir {path} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"run_dir {path} cannot be created: no permission to write in {parent}")


_LOCKS: dict[Path, int] = {}


def lock(path: Path) -> None:
    """Hold ``path``'s lock for the rest of this process: a second job on the same run
    directory is refused instead of interleaving writes with the first."""
    key = Path(path).resolve()
    if key in _LOCKS:
        return
    fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        held_by = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigError(
            f"run_dir {path} is in use by another job (pid {held_by}); wait for it to end, or "
            "use another run_dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _LOCKS[key] = fd


def unlock_all() -> None:
    for fd in _LOCKS.values():
        os.close(fd)
    _LOCKS.clear()


def clean_partial(path: Path) -> int:
    """Remove files a killed write left half-done (only under the lock); returns how many."""
    gone = 0
    for tmp in Path(path).rglob(".*.tmp"):
        if _TMP.fullmatch(tmp.name) and tmp.is_file():
            tmp.unlink(missing_ok=True)
            gone += 1
    return gone


# --------------------------------------------------------------------------- the layout


class RunDir:
    """One run directory: every path in it and its readers, the one owner of its layout.
    Recipes write through it; evaluation, discussion, Serve and the benchmarks read a finished
    run through it without building a recipe."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # whole-run files
    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def summary_file(self) -> Path:
        return self.path / "summary.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def accuracy_plot(self) -> Path:
        return self.path / "accuracy.png"

    @property
    def controller_dir(self) -> Path:
        return self.path / "controller"

    @property
    def evaluation_dir(self) -> Path:
        """What ``jobs/evaluate.py`` writes beside a run (suite, discussion)."""
        return self.path / "evaluation"

    @property
    def suite_file(self) -> Path:
        """The evaluation suite's summary (``jobs/evaluate.py method=suite``)."""
        return self.evaluation_dir / "summary.json"

    def suite(self) -> dict[str, Any] | None:
        """The evaluation suite's summary, or None where the suite has not run on this run."""
        if not self.suite_file.exists():
            return None
        try:
            summary = json.loads(self.suite_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(
                f"{self.suite_file} is damaged ({e}); rerun the suite (method=suite) or delete it"
            ) from e
        if not isinstance(summary, dict) or summary.get("method") != "suite":
            raise ConfigError(f"{self.suite_file} is not an evaluation suite's summary")
        return summary

    def expects_controller(self, cfg: Config) -> bool:
        """Whether the run has a trained controller or is due one (its rounds scored
        candidates and the controller stage is on)."""
        scored = cfg.rounds and self.round_file(1, "scored.jsonl").exists()
        return self.controller_dir.exists() or bool(cfg.controller.enabled and scored)

    def tensorboard(self, name: str) -> Path:
        """TensorBoard event files of one update: ``tensorboard --logdir <run_dir>/tensorboard``."""
        return (self.path / "tensorboard" / name).resolve()

    # per model, stage and round
    def state(self, key: str, version: int) -> Path:
        """Model ``key``'s weights at ``version`` (1: after the warm-up, r + 1: after round r)."""
        return self.path / "states" / f"{key}-v{version}.safetensors"

    def latest_version(self, keys: Iterable[str]) -> int:
        """The newest version every model in ``keys`` has a saved state of (0: none yet)."""
        keys = list(keys)
        version = 0
        while all(self.state(key, version + 1).exists() for key in keys):
            version += 1
        return version

    def eval_file(self, tag: str, name: str) -> Path:
        """Held-out predictions of model ``name`` at ``tag`` (warmup, round1, …)."""
        return self.path / "eval" / f"{tag}-{name}.jsonl"

    def predictions(self, tag: str, name: str) -> list[Prediction]:
        return read_records(self.eval_file(tag, name), Prediction)

    def warmup_file(self, name: str) -> Path:
        return self.path / "warmup" / name

    def round_file(self, r: int, name: str) -> Path:
        """A round's artifact: ``drafts.jsonl``, ``refinements.jsonl``, ``scored.jsonl``,
        ``u0.json``, ``pairs.jsonl`` (COALITION), ``exchanges.jsonl`` (SAIE)."""
        return self.path / f"round{r}" / name

    @property
    def teacher_samples(self) -> Path:
        """A Fine-tune-CoT run's teacher rationales, each judged (what warm-ups can reuse)."""
        return self.path / "teacher" / "samples.jsonl"

    def teacher_chunk(self, i: int) -> Path:
        return self.path / "teacher" / "chunks" / f"{i:04d}.jsonl"

    def student_file(self, name: str) -> Path:
        return self.path / "student" / name

    def serve_states(self, models: Any, wanted: dict[str, int], log: Any = None) -> None:
        """Make ``models`` (any group with ``versions`` and ``push``) serve this run's saved
        state of each ``key: version`` in ``wanted``, pushing only what is behind, so what
        runs next provably runs on the versions it expects."""
        from coalition.run.checkpoints import load_state

        served = models.versions()
        for key, version in wanted.items():
            if served.get(key) == version:
                continue
            state, saved_key, saved_version = load_state(self.state(key, version))
            if (saved_key, saved_version) != (key, version):
                raise ConfigError(
                    f"{self.state(key, version)} holds {saved_key} v{saved_version}, "
                    f"not {key} v{version}; the run directory is damaged"
                )
            models.push(key, state, version)
            if log is not None:
                log(f"[push] {key} -> version {version}")

    # what run it is
    def kind(self) -> str | None:
        """The job that owns the directory (:func:`owner`)."""
        return owner(self.path)

    def config(self, overrides: list[str] | None = None) -> Config:
        """The config the run was trained with, with ``overrides`` laid over it."""
        return config_mod.load(self.config_file, overrides, saved=True)

    def trained(self) -> tuple[Config, int]:
        """A finished (or interrupted) ``jobs/train.py`` run's config and the newest version
        every variant has a saved state of (1: after the warm-up): what evaluation and serving
        load. A missing directory, another job's run or one without trained variants is a
        :class:`ConfigError` that says so."""
        if not self.path.is_dir():
            raise ConfigError(f"run_dir {self.path} does not exist or is not a directory")
        kind = self.kind()
        if kind not in ("train", "unknown") or not self.config_file.exists():
            what = f"a jobs/{kind}.py run" if kind in ("distill", "saie", "evaluate") else "no run"
            raise ConfigError(
                f"run_dir {self.path} holds {what} ({describe(self.path)}); this needs a "
                "jobs/train.py run directory"
            )
        cfg = self.config()
        version = self.latest_version(variant_key(k) for k in range(cfg.variants.count))
        if version == 0:
            raise ConfigError(
                f"run_dir {self.path}: no trained variants yet (warm-up not finished)"
            )
        return cfg, version
