"""Checkpoint completeness: the marker a save writes last, rotation over complete checkpoints, the resume choice."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "checkpoint"  # transformers' PREFIX_CHECKPOINT_DIR: output_dir/checkpoint-<global step>
MARKER = "checkpoint_complete.json"  # written last, after every rank's files: {"global_step", "files"}
IN_PROGRESS = "checkpoint_in_progress.json"  # written first, removed after MARKER: a save that never finished
TRAINER_STATE = "trainer_state.json"  # the last file transformers' Trainer writes into a checkpoint
_NAME = re.compile(rf"^{PREFIX}-(\d+)$")

COMPLETE, LEGACY, INCOMPLETE = "complete", "legacy", "incomplete"


class IncompleteCheckpointError(ValueError):
    """An explicit --resume_from_checkpoint names a folder whose save never finished."""


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint folder and whether a resume may use it (`missing` says why not)."""

    path: Path
    step: int | None
    status: str  # COMPLETE (marker, listed files present), LEGACY (no marker, written before markers existed)
    missing: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        return self.status != INCOMPLETE


def step_of(name: str) -> int | None:
    """The global step in a `checkpoint-N` folder name, else None."""
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def inspect(path: str | Path) -> Checkpoint:
    """Classify one folder.

    - complete: MARKER is there and every file it lists still exists.
    - legacy: no MARKER, no IN_PROGRESS, and trainer_state.json exists. Checkpoints written before markers existed
      look like this; transformers writes trainer_state.json after the weights, optimizer, scheduler and RNG
      states, so its presence means that save finished. (A save by this code leaves IN_PROGRESS behind until its
      marker is down, so an interrupted new save is never taken for a legacy one.)
    - incomplete: anything else; `missing` names the marker and the files that are not there.
    """
    path = Path(path)
    step = step_of(path.name)
    marker = path / MARKER
    if marker.is_file():
        try:
            listed = json.loads(marker.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return Checkpoint(path, step, INCOMPLETE, (f"{MARKER} (unreadable)",))
        absent = tuple(name for name in listed if not (path / name).exists())
        return Checkpoint(path, step, INCOMPLETE, absent) if absent else Checkpoint(path, step, COMPLETE)
    if (path / IN_PROGRESS).is_file():
        return Checkpoint(path, step, INCOMPLETE, (MARKER,))
    if (path / TRAINER_STATE).is_file():
        return Checkpoint(path, step, LEGACY)
    return Checkpoint(path, step, INCOMPLETE, (MARKER, TRAINER_STATE))


def scan(output_dir: str | Path) -> list[Checkpoint]:
    """Every checkpoint-N folder in output_dir, oldest step first ([] when output_dir does not exist)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [inspect(p) for p in root.iterdir() if p.is_dir() and step_of(p.name) is not None]
    return sorted(found, key=lambda c: c.step)


# ---------------------------------------------------------------------- rotation
def rotation_deletions(checkpoints: list[Checkpoint], save_total_limit: int | None,
                       protected: Iterable[str | Path | None] = ()) -> list[Path]:
    """What to delete after a save: incomplete folders older than the newest usable checkpoint, and the oldest
    usable ones beyond `save_total_limit`. Never the newest usable checkpoint, nor a `protected` one (the one just
    written, the best model); incomplete folders newer than the newest usable one are left alone."""
    usable = sorted((c for c in checkpoints if c.usable), key=lambda c: c.step)
    if not usable:
        return []
    newest = usable[-1]
    keep = {os.path.realpath(p) for p in protected if p is not None} | {os.path.realpath(newest.path)}
    doomed = [c.path for c in checkpoints
              if not c.usable and c.step < newest.step and os.path.realpath(c.path) not in keep]
    if save_total_limit is None or save_total_limit <= 0:
        return doomed
    kept_anyway = sum(os.path.realpath(c.path) in keep for c in usable)
    remaining = len(usable)
    for c in usable:  # oldest first, as transformers' rotate_checkpoints does
        if remaining <= max(save_total_limit, kept_anyway):
            break
        if os.path.realpath(c.path) not in keep:
            doomed.append(c.path)
            remaining -= 1
    return doomed


# ---------------------------------------------------------------------- resuming
@dataclass(frozen=True)
class ResumeChoice:
    """`--resume_from_checkpoint True`: the newest usable checkpoint (None: start from scratch), the incomplete
    folders it passed over, and those of them newer than it (to clear before training saves at their steps)."""

    checkpoint: Checkpoint | None
    ignored: list[Checkpoint] = field(default_factory=list)
    newer_incomplete: list[Checkpoint] = field(default_factory=list)


def choose_resume(checkpoints: list[Checkpoint]) -> ResumeChoice:
    usable = [c for c in checkpoints if c.usable]
    chosen = max(usable, key=lambda c: c.step) if usable else None
    ignored = [c for c in checkpoints if not c.usable]
    newer = [c for c in ignored if chosen is None or c.step > chosen.step]
    return ResumeChoice(chosen, ignored, newer)


def describe(choice: ResumeChoice, output_dir: str | Path, cleared: bool) -> str:
    """The one line a run prints about what `--resume_from_checkpoint True` found."""
    if choice.checkpoint is None:
        line = f"--resume_from_checkpoint True: no complete checkpoint in {output_dir}, starting from scratch"
    else:
        legacy = " (written before completion markers; trainer_state.json present)" \
            if choice.checkpoint.status == LEGACY else ""
        line = f"--resume_from_checkpoint True: resuming from {choice.checkpoint.path}{legacy}"
    if choice.ignored:
        names = ", ".join(f"{c.path.name} (no {' / '.join(c.missing)})" for c in choice.ignored)
        line += f"; ignored incomplete checkpoints: {names}"
        if choice.newer_incomplete:
            verb = "deleted" if cleared else "to be deleted by the main process"
            line += f"; {verb} the newer ones: {', '.join(c.path.name for c in choice.newer_incomplete)}"
    return line


def require_complete(path: str | Path) -> Checkpoint:
    """An explicit resume path must be a finished save (complete, or legacy: see `inspect`)."""
    checkpoint = inspect(path)
    if checkpoint.usable:
        return checkpoint
    hint = ""
    siblings = [c for c in scan(Path(path).parent) if c.usable]
    if siblings:
        hint = f"; the newest complete checkpoint beside it is {siblings[-1].path}"
    raise IncompleteCheckpointError(
        f"--resume_from_checkpoint {path} is an incomplete checkpoint (its save was interrupted): missing "
        f"{', '.join(checkpoint.missing)}{hint}")


# ---------------------------------------------------------------------- writing
def begin_save(checkpoint_dir: str | Path, step: int) -> None:
    """Before a save writes anything: drop a stale marker (a folder reused by a re-run) and flag the save."""
    folder = Path(checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).unlink(missing_ok=True)
    _atomic_json(folder / IN_PROGRESS, {"global_step": step})


def write_marker(checkpoint_dir: str | Path, step: int) -> Path:
    """Call after every rank's files are written: flush them to disk, then write MARKER atomically (temp name,
    fsync, os.replace) and remove IN_PROGRESS. Returns the marker's path."""
    folder = Path(checkpoint_dir)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.is_file() and p.name not in (MARKER, IN_PROGRESS) and not _is_temp(p.name))
    for name in files:  # a marker must not outlive its files in a power cut
        _fsync_path(folder / name)
    for directory in {(folder / name).parent for name in files}:
        _fsync_path(directory)
    marker = _atomic_json(folder / MARKER, {"global_step": step, "files": files})
    (folder / IN_PROGRESS).unlink(missing_ok=True)
    _fsync_path(folder)
    return marker


def _is_temp(name: str) -> bool:
    return name.startswith((f".{MARKER}.", f".{IN_PROGRESS}.")) and name.endswith(".tmp")


def _atomic_json(path: Path, data: dict) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_path(path.parent)
    return path


def _fsync_path(path: Path) -> None:
    """fsync a file or a directory; filesystems that refuse directory fsync are left to their own guarantees."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
