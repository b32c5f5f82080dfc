"""Bad training samples: counted by kind, logged once, appended to `bad_samples.jsonl` from any process."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

from llava.data.reader import iter_records

logger = logging.getLogger(__name__)

REPORT_NAME = "bad_samples.jsonl"
SUMMARY_NAME = "bad_samples_summary.json"


def current_rank() -> int:
    """Global rank of this process (0 when not distributed); DataLoader workers inherit their rank's env."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except Exception:  # noqa: BLE001 - a broken distributed setup must not hide the data report
        pass
    for name in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(name)
        if value is not None and value.strip().lstrip("-").isdigit():
            return int(value)
    return 0


class BadSampleLog:
    """Counts and reports bad samples; every entry is a JSON line {index, id, image, kind, reason, ...}.

    With a `report_dir`, each entry is appended to `report_dir/bad_samples.jsonl` by one `O_APPEND` write,
    so DataLoader workers and ranks can all write to it; `summary()` then reads the file back and counts
    each record index once (the first kind seen), which merges every process's findings. Without a
    `report_dir` the counts are this process's only. Console lines are capped at `max_console` per process.
    """

    def __init__(self, report_dir: str | os.PathLike | None = None, *, max_console: int = 50):
        self.path = Path(report_dir) / REPORT_NAME if report_dir else None
        self.max_console = max_console
        self._seen: dict[int, str] = {}  # index -> kind, this process
        self._console = 0
        self._pid = os.getpid()

    # ------------------------------------------------------------------ writing
    def reset(self, entries: list[dict] | None = None) -> None:
        """Start a fresh report holding `entries` (call on rank 0 only, before training starts)."""
        self._seen.clear()
        for entry in entries or []:
            self._seen.setdefault(int(entry["index"]), str(entry["kind"]))
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(json.dumps(e, default=str) + "\n" for e in entries or []), encoding="utf-8")
        os.replace(tmp, self.path)  # atomic: a concurrent appender never sees a half-written file

    def adopt(self, entries: list[dict]) -> None:
        """Count `entries` in this process without writing them (ranks > 0 see the same up-front findings)."""
        for entry in entries:
            self._seen.setdefault(int(entry["index"]), str(entry["kind"]))

    def record(
        self,
        *,
        index: int,
        kind: str,
        reason: str,
        record_id: object = None,
        image: object = None,
        **extra: object,
    ) -> bool:
        """Count and report one bad sample; returns False (and does nothing) if this process already has."""
        if os.getpid() != self._pid:  # forked into a DataLoader worker: start from the inherited state
            self._pid = os.getpid()
            self._console = 0
        if index in self._seen:
            return False
        self._seen[index] = kind
        entry = {"index": index, "id": record_id, "image": image, "kind": kind, "reason": reason, **extra}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = (json.dumps(entry, default=str) + "\n").encode("utf-8")
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        self._console += 1
        if self._console <= self.max_console:
            logger.warning("[rank %d] skipping bad sample %s", current_rank(), format_entry(entry))
        elif self._console == self.max_console + 1:
            where = f"; the rest go to {self.path}" if self.path else ""
            logger.warning("[rank %d] more than %d bad samples%s", current_rank(), self.max_console, where)
        return True

    # ------------------------------------------------------------------ reading
    def entries(self) -> list[dict]:
        """Every entry of the report file, one per record index (the first written wins)."""
        if self.path is None or not self.path.is_file():
            return []
        out: dict[int, dict] = {}
        for _, entry in iter_records(self.path):
            if isinstance(entry, dict):  # a line cut by a crash is skipped; the rest is still valid
                out.setdefault(int(entry["index"]), entry)
        return list(out.values())

    def summary(self) -> dict[str, int]:
        """Bad samples by kind (every process's, read from the report file when there is one)."""
        if self.path is not None and self.path.is_file():
            counts = Counter(str(e["kind"]) for e in self.entries())
        else:
            counts = Counter(self._seen.values())
        return dict(sorted(counts.items()))

    def write_summary(self, path: str | os.PathLike | None = None) -> Path:
        """Write `{"total": n, "by_kind": {...}}` as JSON (default: next to the report); returns the path."""
        if path is None:
            if self.path is None:
                raise ValueError("no path given and no report_dir configured")
            path = self.path.with_name(SUMMARY_NAME)
        counts = self.summary()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"total": sum(counts.values()), "by_kind": counts}, indent=2) + "\n")
        return out


def format_entry(entry: dict) -> str:
    """One readable line: where the record is, what is wrong with it."""
    parts = [f"index {entry.get('index')}"]
    if entry.get("id") is not None:
        parts.append(f"id={entry['id']!r}")
    if entry.get("file"):
        parts.append(f"file {entry['file']}")
    if entry.get("image") is not None:
        parts.append(f"image {entry['image']!r}")
    return ", ".join(parts) + f": [{entry.get('kind')}] {entry.get('reason')}"


def format_counts(counts: dict[str, int]) -> str:
    """'kind=n, kind=n' in a stable order."""
    return ", ".join(f"{k}={n}" for k, n in sorted(counts.items()))
