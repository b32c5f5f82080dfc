"""The up-front image check: which image records resolve to a file, missing counts per top-level subfolder, and
the rules that stop a run whose `--image_folder` is wrong or whose image sets were never (fully) downloaded.

Rules (judged before any model loads, whatever `--bad_sample_policy` says; `max_missing` is
`--max_missing_images`, default 0.1):

- more than `max_missing` of all image records have no file, or
- a top-level subfolder (the first component of a record's `image` path: `coco/`, `gqa/`, ... in the 665K mix;
  paths without one form the group ".") that at least `MIN_GROUP_RECORDS` records refer to lacks at least
  `GROUP_STOP_FRACTION` of its images (absent, or mostly empty). Smaller groups never stop a run on their own, so
  one missing file in a small folder is skipped like any other bad record.

`max_missing = 1.0` turns both rules off. Missing images below the thresholds are skipped and counted as before.

Existence is decided like `os.path.isfile`. With many paths, each directory that holds at least `LIST_MIN_FILES`
of them is listed once (`os.scandir`) instead of stat'ed per file: 55k paths in three directories (50k present)
cost 94 `getdents64` and ~70 `stat` calls instead of 55k `stat`s. On a warm local ext4 disk with 2 cores that is
0.2-0.35 s, the same as serial stats (0.15-0.26 s) and far below the 32-thread stat pool used before (2.0-2.2 s:
threads only fight over the GIL there); on a network file system each uncached stat is a round trip, a listing
a few per directory. Paths in directories holding fewer go to that thread pool when there are many of them.
A name the listing lacks is confirmed by a stat (case-insensitive or normalising file systems), until a
directory has shown `CONFIRM_MISSES` misses that a stat confirmed.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

DEFAULT_MAX_MISSING = 0.1  # --max_missing_images
MIN_GROUP_RECORDS = 5  # a subfolder with fewer image records never stops a run on its own
GROUP_STOP_FRACTION = 0.5  # ... one with more stops when at least this share of its images is missing
LIST_MIN_FILES = 8  # a directory holding this many of the paths is listed once instead of stat'ed per file
LIST_MIN_PATHS = 256  # below this many paths in all, one stat each is as fast
CONFIRM_MISSES = 32
SHOWN_EXAMPLES = 3
SHOWN_GROUPS = 12  # table rows; the rest are summed up in one line
NAMED_GROUPS = 6  # subfolders the error names


class MissingImagesError(ValueError):
    """Too many image records have no file (wrong `--image_folder`, an image set not downloaded); the message names
    the folder, the counts per subfolder, an example path and the flag that moves the threshold."""


def subfolder_of(image: str) -> str:
    """The top-level subfolder a record's image path names ("gqa/"), "." when the path has none."""
    path = posixpath.normpath(image)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if len(parts) < 2:
        return "."
    return ("/" if path.startswith("/") else "") + parts[0] + "/"  # an absolute path keeps its root


def existing_files(paths: Iterable[str]) -> dict[str, bool]:
    """{path: os.path.isfile(path)}, listing each directory once where that saves stats (see the module doc)."""
    paths = set(paths)
    if len(paths) < LIST_MIN_PATHS:
        return {p: os.path.isfile(p) for p in paths}
    by_dir: dict[str, list[str]] = {}
    for path in paths:
        by_dir.setdefault(os.path.dirname(path), []).append(path)
    exists: dict[str, bool] = {}
    single: list[str] = []  # paths stat'ed one by one
    for directory, members in by_dir.items():
        listed = _list_files(directory) if len(members) >= LIST_MIN_FILES else None
        if listed is None:  # few files here, or a directory that cannot be listed
            single += members
            continue
        confirmed_misses = 0
        for path in members:
            if os.path.basename(path) in listed:
                exists[path] = True
            elif confirmed_misses >= CONFIRM_MISSES:
                exists[path] = False
            else:
                exists[path] = os.path.isfile(path)
                confirmed_misses += not exists[path]
    if len(single) >= LIST_MIN_PATHS:  # many small directories: network file systems answer stats in parallel
        with ThreadPoolExecutor(max_workers=32) as pool:
            exists.update(zip(single, pool.map(os.path.isfile, single, chunksize=64)))
    else:
        exists.update((p, os.path.isfile(p)) for p in single)
    return exists


def _list_files(directory: str) -> set[str] | None:
    """Names of the files (symlinks to files included) in `directory`; an empty set when it does not exist, None
    when it exists but cannot be listed."""
    try:
        with os.scandir(directory or ".") as entries:
            return {e.name for e in entries if e.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return set()
    except OSError:
        return None


@dataclasses.dataclass
class ImageCheck:
    """What the check found: counts in all and per subfolder, and the first missing files."""

    image_folder: str | None
    folder_flag: str = "--image_folder"  # how the messages name the flags (inspect spells them with dashes)
    threshold_flag: str = "--max_missing_images"
    total: int = 0
    missing: int = 0
    groups: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # subfolder -> [records, missing]
    examples: list[str] = dataclasses.field(default_factory=list)  # "id='x' (data.json record 3): /full/path"
    absent: set[str] = dataclasses.field(default_factory=set)  # subfolders whose directory does not exist
    folder_absent: bool = False  # image_folder itself does not exist

    def add(self, image: str, found: bool, where: str = "", full_path: str | None = None) -> None:
        """Count one image record; `where` says which record it is, for the examples."""
        group = self.groups.setdefault(subfolder_of(image), [0, 0])
        group[0] += 1
        self.total += 1
        if not found:
            group[1] += 1
            self.missing += 1
            if len(self.examples) < SHOWN_EXAMPLES:
                self.examples.append(f"{where}: {full_path or image}" if where else (full_path or image))

    def finish(self) -> ImageCheck:
        """Note which subfolders with missing images do not exist at all (a few stats)."""
        root = self.image_folder or ""
        self.folder_absent = bool(root) and not os.path.isdir(root)
        self.absent = {g for g, (_, missing) in self.groups.items()
                       if missing and g != "." and (self.folder_absent or not os.path.isdir(os.path.join(root, g)))}
        return self

    @property
    def found(self) -> int:
        return self.total - self.missing

    @property
    def where(self) -> str:
        if not self.image_folder:
            return f"the working directory (no {self.folder_flag})"
        return f"{self.folder_flag} {self.image_folder}" + (" (which does not exist)" if self.folder_absent else "")

    def _shown_groups(self, limit: int, only_missing: bool = False) -> tuple[list[str], list[str]]:
        """(subfolders to show by name, the rest): at most `limit`, those missing most first."""
        names = [g for g, (_, m) in self.groups.items() if m or not only_missing]
        names.sort(key=lambda g: (-self.groups[g][1], -self.groups[g][0], g))
        return sorted(names[:limit]), names[limit:]

    def table(self) -> str:
        """A short report: counts, then one row per subfolder, then the first missing files."""
        share = f" ({self.missing / self.total:.1%})" if self.total else ""
        lines = [f"image check under {self.where}: {self.total} image records, {self.found} found, "
                 f"{self.missing} missing{share}",
                 f"  {'subfolder':<20} {'records':>9} {'missing':>9}"]
        shown, rest = self._shown_groups(SHOWN_GROUPS)
        for group in shown:
            records, missing = self.groups[group]
            note = f"  {missing / records:.0%}" if missing else ""
            note += ", folder absent" if group in self.absent else ""
            lines.append(f"  {group:<20} {records:>9} {missing:>9}{note}")
        if rest:
            lines.append(f"  {f'({len(rest)} more)':<20} {sum(self.groups[g][0] for g in rest):>9} "
                         f"{sum(self.groups[g][1] for g in rest):>9}")
        lines += [f"  missing: {example}" for example in self.examples]
        if self.missing > len(self.examples):
            lines.append(f"  ... {self.missing - len(self.examples)} more missing")
        return "\n".join(lines)

    def problems(self, max_missing: float) -> list[str]:
        """Why this check stops a run under `--max_missing_images max_missing` (empty: it does not)."""
        if max_missing >= 1.0 or not self.missing:
            return []
        out = []
        if self.missing / self.total > max_missing:
            out.append(f"{self.missing / self.total:.1%} of all image records are missing "
                       f"(more than {self.threshold_flag} {max_missing:g})")
        stopping = [g for g, (records, missing) in sorted(self.groups.items())
                    if records >= MIN_GROUP_RECORDS and missing / records >= GROUP_STOP_FRACTION]
        if len(stopping) == 1:
            records, missing = self.groups[stopping[0]]
            state = f"is absent ({records} records)" if stopping[0] in self.absent else \
                f"lacks {missing} of its {records} images"
            out.append(f"subfolder {stopping[0]} {state}")
        elif stopping:
            more = f" and {len(stopping) - NAMED_GROUPS} more" if len(stopping) > NAMED_GROUPS else ""
            out.append(f"subfolders {', '.join(stopping[:NAMED_GROUPS])}{more} lack at least half their images")
        return out

    def error(self, max_missing: float) -> MissingImagesError | None:
        """The one-line error that stops the run, or None when the check passes."""
        problems = self.problems(max_missing)
        if not problems:
            return None
        shown, rest = self._shown_groups(NAMED_GROUPS, only_missing=True)
        by_group = ", ".join(f"{g} {self.groups[g][1]} of {self.groups[g][0]}"
                             + (" (folder absent)" if g in self.absent else "") for g in shown)
        if rest:
            by_group += f", {len(rest)} more subfolders {sum(self.groups[g][1] for g in rest)} of " \
                        f"{sum(self.groups[g][0] for g in rest)}"
        return MissingImagesError(
            f"{self.missing} of {self.total} image records have no image file under {self.where}: "
            f"{'; '.join(problems)}. Missing by subfolder: {by_group}. E.g. {self.examples[0]}. "
            f"Check {self.folder_flag} and that every image set is downloaded, or pass {self.threshold_flag} 1.0 "
            f"to skip the missing records and train on the rest"
        )
