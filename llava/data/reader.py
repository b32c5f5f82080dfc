"""The one reader of record files (a JSON list or JSONL): training data, inspect, eval questions, answer files.

Whether a file is JSONL is decided by its name (`.jsonl`) or its content (the first character is `{`), never by
guessing after a parse error, so every caller reads a file the same way. A JSONL line that does not parse is
yielded as a `BadRecordError("malformed")` in place of its record: training counts and skips it, `inspect`
shows it, strict readers stop on it. A broken JSON list cannot be read past its error and raises `DataFileError`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from llava.data.records import BadRecordError


class DataFileError(ValueError):
    """A file that cannot be read as records at all (not UTF-8, broken JSON list, not a list); names the file."""


def iter_records(path: str | os.PathLike) -> Iterator[tuple[int, object]]:
    """(position in file, record) for a JSON list or JSONL file; blank lines are not records.

    An unparsable JSONL line yields a BadRecordError("malformed") naming file, line and column.
    """
    for position, _, record in _iter_numbered(path):
        yield position, record


def read_records(path: str | os.PathLike, *, what: str = "record", skip_bad_lines: bool = False) -> list:
    """Every record of a file. A JSONL line that does not parse raises DataFileError, or with `skip_bad_lines`
    is left out and reported on stderr by line number (never silently)."""
    records, bad_lines = [], []
    for _, lineno, record in _iter_numbered(path):
        if isinstance(record, BadRecordError):
            if not skip_bad_lines:
                raise DataFileError(record.reason)
            bad_lines.append(lineno)
            continue
        records.append(record)
    if bad_lines:
        shown = ", ".join(map(str, bad_lines[:10])) + (" ..." if len(bad_lines) > 10 else "")
        print(f"WARNING: {path}: {len(bad_lines)} malformed {what} line(s) skipped (lines {shown})", file=sys.stderr)
    return records


def _iter_numbered(path: str | os.PathLike) -> Iterator[tuple[int, int | None, object]]:
    """(position, line number or None for a JSON list, record or BadRecordError)."""
    path = Path(os.path.expanduser(str(path)))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{path}: not UTF-8 text ({exc})") from exc
    head = text.lstrip()[:1]
    if path.suffix == ".jsonl" or head == "{":
        position = 0
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield position, lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                reason = f"{path}: line {lineno} is not JSON (column {exc.colno}: {exc.msg})"
                yield position, lineno, BadRecordError("malformed", reason)
            position += 1
        return
    if not head:
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
    if not isinstance(data, list):
        raise DataFileError(f"{path}: expected a JSON list of records (or JSONL), got a {type(data).__name__}")
    for position, record in enumerate(data):
        yield position, None, record
