"""Answer files: reading them (one JSON object per line, joined by id) and writing them resumably, with a
`<answers>.meta.json` sidecar saying how they were made.

Rows are the reference's `{question_id, prompt, text, answer_id, model_id, metadata}` (docs/reference.md#answer-files), plus `error` when
the image could not be read. Rows are never dropped silently: bad lines, error rows, missing and duplicate answers
are all counted and reported by the callers.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llava.data.reader import read_records


# ---------------------------------------------------------------------- ids and reading
def id_key(value: Any) -> str:
    """The join and resume key of an id that may be an int in one file and a str in another (5 == "5")."""
    return str(value).strip()


def question_key(row: Mapping[str, Any]) -> str:
    """Resume key of a row: its question_id."""
    return id_key(row.get("question_id"))


def read_jsonl(path: str | os.PathLike, what: str = "answers") -> list[dict[str, Any]]:
    """Rows of an answers (or questions) file; malformed lines are reported on stderr by line number and skipped."""
    return read_records(path, what=what, skip_bad_lines=True)


def answer_error(row: Mapping[str, Any]) -> str | None:
    """The row's `error` message (unreadable image etc.), or None for a normal answer."""
    err = row.get("error")
    return str(err) if err else None


def answer_text(row: Mapping[str, Any]) -> str:
    """The answer text, "" for an error row."""
    return "" if answer_error(row) else str(row.get("text") or "")


@dataclass
class JoinReport:
    """What a converter or scorer could not match; printed so that gaps are never silent."""

    name: str
    n_expected: int = 0
    n_written: int = 0
    missing: list[str] = field(default_factory=list)  # expected ids without an answer
    errors: list[str] = field(default_factory=list)  # answers carrying an "error" field
    unmatched: list[str] = field(default_factory=list)  # answers whose id is not expected
    duplicates: list[str] = field(default_factory=list)  # ids answered more than once (first kept)

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_expected": self.n_expected,
            "n_written": self.n_written,
            "n_missing": len(self.missing),
            "n_errors": len(self.errors),
            "n_unmatched": len(self.unmatched),
            "n_duplicates": len(self.duplicates),
            "missing_ids": self.missing,
            "error_ids": self.errors,
            "unmatched_ids": self.unmatched,
            "duplicate_ids": self.duplicates,
        }

    def summary(self) -> str:
        def ids(xs: list[str]) -> str:
            return "" if not xs else " (" + ", ".join(xs[:5]) + (", ..." if len(xs) > 5 else "") + ")"

        return (
            f"[{self.name}] expected {self.n_expected}, written {self.n_written}; "
            f"missing answers: {len(self.missing)}{ids(self.missing)}; "
            f"error rows: {len(self.errors)}{ids(self.errors)}; "
            f"answers without a question: {len(self.unmatched)}{ids(self.unmatched)}; "
            f"duplicates: {len(self.duplicates)}{ids(self.duplicates)}"
        )

    def print(self) -> None:
        print(self.summary(), file=sys.stderr if self.has_gaps else sys.stdout)

    @property
    def has_gaps(self) -> bool:
        return bool(self.missing or self.errors or self.unmatched or self.duplicates)


def index_answers(
    rows: Iterable[Mapping[str, Any]], report: JoinReport, key: str = "question_id"
) -> dict[str, Mapping[str, Any]]:
    """Answers by id key; duplicates (first kept) and error rows are recorded in `report`."""
    out: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        k = id_key(row.get(key))
        if k in out:
            report.duplicates.append(k)
            continue
        out[k] = row
        if answer_error(row):
            report.errors.append(k)
    return out


def join_answers(
    expected_ids: Sequence[Any], answers: Sequence[Mapping[str, Any]], report: JoinReport
) -> list[Mapping[str, Any] | None]:
    """Answers aligned to `expected_ids` (None where missing); unmatched answers are recorded."""
    by_id = index_answers(answers, report)
    expected_keys = [id_key(q) for q in expected_ids]
    expected_set = set(expected_keys)
    report.n_expected = len(expected_keys)
    report.unmatched.extend(k for k in by_id if k not in expected_set)
    report.errors[:] = [k for k in report.errors if k in expected_set]
    aligned: list[Mapping[str, Any] | None] = []
    for k in expected_keys:
        row = by_id.get(k)
        if row is None:
            report.missing.append(k)
        aligned.append(row)
    return aligned


# ---------------------------------------------------------------------- writing
META_SUFFIX = ".meta.json"
META_FORMAT = "llava-answers-meta/1"


class AnswerFileError(RuntimeError):
    """The answers file cannot be resumed (corrupt line, or written with other settings)."""


def question_round_key(row: Mapping[str, Any]) -> str:
    """Resume key for files with several rows per question (MMBench option rotations)."""
    return f"{question_key(row)}#{int(row.get('round_id', 0) or 0)}"


def meta_path(answers_file: str | os.PathLike) -> Path:
    return Path(str(answers_file) + META_SUFFIX)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class AnswerFile:
    """Append-only JSONL writer that resumes: rows whose key is already in the file are `done`.

    Opening repairs a run killed mid-write: a last line without its newline (or not valid JSON) is cut off.
    A malformed line elsewhere is an error, never silently skipped.
    """

    def __init__(self, path: str | os.PathLike, key: Callable[[Mapping[str, Any]], str] = question_key,
                 overwrite: bool = False):
        self.path = Path(path)
        self.key = key
        self.done: set[str] = set()
        self.n_existing = 0
        self.n_error_rows = 0
        self.repaired_bytes = 0
        self.n_written = 0
        self.n_errors_written = 0
        self._fh = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for p in (self.path, self.meta_path):
                if p.exists():
                    p.unlink()
        self._load()

    @property
    def meta_path(self) -> Path:
        return meta_path(self.path)

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1  # everything after the last newline is a partial line
        lines = data[:keep].split(b"\n")[:-1]
        pos = 0
        for i, line in enumerate(lines):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    if i == len(lines) - 1:  # a broken last line: the run died while writing it
                        keep = pos
                        break
                    raise AnswerFileError(f"{self.path}: line {i + 1} is not valid JSON ({err}); fix or remove it") from err
                self.done.add(self.key(row))
                self.n_existing += 1
                self.n_error_rows += bool(row.get("error"))
            pos += len(line) + 1
        if keep < len(data):
            self.repaired_bytes = len(data) - keep
            with open(self.path, "r+b") as f:
                f.truncate(keep)
            print(f"{self.path}: removed a partial last line ({self.repaired_bytes} bytes) left by an interrupted run",
                  file=sys.stderr)

    def __contains__(self, key: str) -> bool:
        return key in self.done

    def pending(self, items: Iterable[Any], key: Callable[[Any], str]) -> list[Any]:
        """The items whose key is not yet answered, in order."""
        return [item for item in items if key(item) not in self.done]

    def write(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows (one JSON object per line) and make them durable before returning."""
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        for row in rows:
            self._fh.write(json.dumps(row) + "\n")
            self.done.add(self.key(row))
            self.n_written += 1
            self.n_errors_written += bool(row.get("error"))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> AnswerFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ sidecar
    def read_meta(self) -> dict[str, Any] | None:
        if not self.meta_path.is_file():
            return None
        try:
            return json.loads(self.meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None

    def start_run(self, fingerprint: Mapping[str, Any], details: Mapping[str, Any]) -> None:
        """Record this run in the sidecar. `fingerprint` (checkpoint, template, decoding, questions, chunk) must
        equal that of the rows already in the file: mixing settings in one answers file is refused."""
        fingerprint = json.loads(json.dumps(fingerprint, default=str))
        meta = self.read_meta()
        if meta and self.n_existing and meta.get("fingerprint") != fingerprint:
            old = meta.get("fingerprint") or {}
            diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            raise AnswerFileError(
                f"{self.path} already holds {self.n_existing} answers made with other settings ({', '.join(diff)}); "
                "use another --answers-file, or --overwrite to start again"
            )
        if self.n_existing and not meta:
            print(f"WARNING: {self.path} has {self.n_existing} answers but no {self.meta_path.name}; resuming anyway",
                  file=sys.stderr)
        if not meta or not self.n_existing:
            meta = {"format": META_FORMAT, "answers_file": str(self.path), "fingerprint": fingerprint, "runs": []}
        meta["runs"].append({
            "started": _now(), "argv": list(sys.argv), "answers_before": self.n_existing,
            "repaired_bytes": self.repaired_bytes, **json.loads(json.dumps(details, default=str)),
        })
        _write_json_atomic(self.meta_path, meta)

    def finish_run(self, **summary: Any) -> None:
        """Add the counts of this run (answers, error rows) to its sidecar entry."""
        meta = self.read_meta()
        if not meta or not meta.get("runs"):
            return
        meta["runs"][-1].update(finished=_now(), answers_written=self.n_written,
                                error_rows_written=self.n_errors_written, **summary)
        meta["total_rows"] = self.n_existing + self.n_written
        meta["total_error_rows"] = self.n_error_rows + self.n_errors_written
        _write_json_atomic(self.meta_path, meta)
