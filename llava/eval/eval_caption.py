"""Caption scorer: BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE when it can run) via pycocoevalcap, joined by id."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llava.eval.answer_file import answer_error, answer_text, id_key, meta_path, read_jsonl

ID_FIELDS = ("image_id", "question_id", "image")
_REFERENCE_FIELDS = ("captions", "references", "refs", "caption", "label")
_meteor_instance: Any = None


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def load_references(path: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(references by image-id key, aliases: file name / stem -> image-id key).

    Accepted: COCO captions json ({"images": [...], "annotations": [{image_id, caption}]}), a plain
    {image_id: [captions]} json, or jsonl lines {question_id | image_id, captions: [...]} (also "label").
    """
    refs: dict[str, list[str]] = {}
    aliases: dict[str, str] = {}
    if path.endswith(".jsonl"):
        for row in read_jsonl(path, "reference"):
            key_value = next((row[k] for k in ("image_id", "question_id", "id") if k in row), None)
            if key_value is None:
                raise ValueError(f"{path}: reference line without image_id / question_id: {row}")
            caps = next((_as_list(row[k]) for k in _REFERENCE_FIELDS if k in row), None)
            if caps is None:
                raise ValueError(f"{path}: reference line without captions: {row}")
            refs.setdefault(id_key(key_value), []).extend(caps)
            if "image" in row:
                _add_alias(aliases, str(row["image"]), id_key(key_value))
        return refs, aliases
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict) and "annotations" in data:
        for ann in data["annotations"]:
            refs.setdefault(id_key(ann["image_id"]), []).append(str(ann["caption"]))
        for img in data.get("images", []):
            key = id_key(img["id"])
            refs.setdefault(key, [])
            if "file_name" in img:
                _add_alias(aliases, str(img["file_name"]), key)
        empty = [k for k, v in refs.items() if not v]
        if empty:
            print(
                f"WARNING: {len(empty)} images in {path} have no captions; they are not scored",
                file=sys.stderr,
            )
            for k in empty:
                del refs[k]
        return refs, aliases
    if isinstance(data, dict):
        return {id_key(k): _as_list(v) for k, v in data.items()}, aliases
    raise ValueError(f"{path}: unknown reference format")


def _add_alias(aliases: dict[str, str], file_name: str, key: str) -> None:
    base = os.path.basename(file_name)
    aliases[base] = key
    aliases[os.path.splitext(base)[0]] = key


def _field(row: Mapping[str, Any], name: str) -> Any:
    if name in row:
        return row[name]
    meta = row.get("metadata")
    return meta.get(name) if isinstance(meta, dict) else None


def _candidate_key(row: Mapping[str, Any], name: str, aliases: Mapping[str, str]) -> str | None:
    value = _field(row, name)
    if value is None:
        return None
    key = id_key(value)
    if name == "image":
        base = os.path.basename(key)
        return aliases.get(base, aliases.get(os.path.splitext(base)[0], base))
    return key


def choose_id_field(
    rows: Sequence[Mapping[str, Any]], refs: Mapping[str, Any], aliases: Mapping[str, str]
) -> str:
    """The answer field (top level or metadata) whose values match the most reference ids, used for every row."""
    best, best_hits = "question_id", -1
    for name in ID_FIELDS:
        hits = sum(1 for r in rows if _candidate_key(r, name, aliases) in refs)
        if hits > best_hits:
            best, best_hits = name, hits
    return best


# --------------------------------------------------------------------------------------------------------------
# Joining predictions and references
# --------------------------------------------------------------------------------------------------------------


def join_captions(
    rows: Sequence[Mapping[str, Any]],
    refs: Mapping[str, list[str]],
    aliases: Mapping[str, str] | None = None,
    id_field: str = "auto",
    max_words: int | None = None,
    skip_missing: bool = False,
) -> tuple[dict[str, str], dict[str, list[str]], dict[str, Any]]:
    """(predictions, references, report), both keyed by the same sorted image ids.

    Rows join references by image id, never by position. Error rows score as empty captions; images without a
    prediction score as empty captions too (or are left out with `skip_missing`); predictions without
    references cannot be scored. All of them are counted and listed in the report.
    """
    aliases = aliases or {}
    field_name = choose_id_field(rows, refs, aliases) if id_field == "auto" else id_field
    preds: dict[str, str] = {}
    unmatched, duplicates, errors = [], [], []
    for row in rows:
        key = _candidate_key(row, field_name, aliases)
        label = key if key is not None else f"<no {field_name}>"
        if key is None or key not in refs:
            unmatched.append(label)
            continue
        if key in preds:
            duplicates.append(key)
            continue
        if answer_error(row):
            errors.append(key)
        text = answer_text(row)
        if max_words is not None:
            text = " ".join(text.split()[:max_words])
        preds[key] = text
    missing = [k for k in refs if k not in preds]
    if not skip_missing:
        for k in missing:
            preds[k] = ""
    keys = sorted(preds, key=_sort_key)
    report = {
        "id_field": field_name,
        "n_predictions": len(rows),
        "n_references_images": len(refs),
        "n_missing_predictions": len(missing),
        "missing_prediction_ids": sorted(missing, key=_sort_key),
        "missing_predictions_scored_as": "skipped" if skip_missing else "empty caption",
        "n_unmatched_predictions": len(unmatched),
        "unmatched_prediction_ids": unmatched,
        "n_errors": len(errors),
        "error_ids": errors,
        "n_duplicates": len(duplicates),
        "duplicate_ids": duplicates,
    }
    return {k: preds[k] for k in keys}, {k: list(refs[k]) for k in keys}, report


def _sort_key(key: str) -> tuple[int, int, str]:
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


# --------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------


def spice_unavailable_reason() -> str | None:
    """Why SPICE cannot run here, or None. pycocoevalcap downloads Stanford CoreNLP 3.6.0 on first use, which
    fails offline; we never trigger that download."""
    if shutil.which("java") is None:
        return "java is not on PATH"
    import pycocoevalcap.spice.spice as spice_module

    lib = Path(spice_module.__file__).parent / "lib"
    needed = [lib / "stanford-corenlp-3.6.0.jar", lib / "stanford-corenlp-3.6.0-models.jar"]
    absent = [p.name for p in needed if not p.is_file()]
    if absent:
        return (
            f"Stanford CoreNLP is not installed ({', '.join(absent)} missing in {lib}; pycocoevalcap would "
            "download it from nlp.stanford.edu, which needs internet)"
        )
    return None


def _meteor() -> Any:
    """One METEOR JVM per process (it takes ~10 s to start), reused across calls."""
    global _meteor_instance
    if _meteor_instance is None:
        from pycocoevalcap.meteor.meteor import Meteor

        _meteor_instance = Meteor()
    return _meteor_instance


def ptb_tokenize(captions: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """pycocoevalcap's PTB tokenizer (Stanford CoreNLP 3.4.1, Java): lower-cases and drops punctuation."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # The tokenizer maps output lines back to captions by position, so no caption may contain a line break.
    def one_line(text: str) -> str:
        return " ".join(text.splitlines())

    return PTBTokenizer().tokenize({k: [{"caption": one_line(c)} for c in v] for k, v in captions.items()})


def caption_metrics(
    preds: Mapping[str, str],
    refs: Mapping[str, Sequence[str]],
    spice: bool | None = None,
    use_meteor: bool = True,
) -> tuple[dict[str, float], str | None]:
    """(corpus scores, SPICE skip message or None) for predictions and references keyed alike.

    spice=None runs SPICE only when it can; spice=False never does; spice=True raises if it cannot.
    """
    if shutil.which("java") is None:
        raise RuntimeError(
            "caption scoring needs Java (PTB tokenizer, METEOR): install a JRE, e.g. openjdk-17"
        )
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if not preds:
        raise ValueError("no predictions to score")
    gts = ptb_tokenize(refs)
    res = ptb_tokenize({k: [v] for k, v in preds.items()})
    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n, value in enumerate(bleu, 1):
        scores[f"Bleu_{n}"] = float(value)
    if use_meteor:
        scores["METEOR"] = float(_meteor().compute_score(gts, res)[0])
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])

    skip = None
    if spice is False:
        skip = "SPICE skipped: disabled (--no-spice)"
    else:
        reason = spice_unavailable_reason()
        if reason is None:
            try:
                from pycocoevalcap.spice.spice import Spice

                scores["SPICE"] = float(Spice().compute_score(gts, res)[0])
            except Exception as exc:  # the SPICE jar fails in many environment-specific ways
                if spice:
                    raise
                skip = f"SPICE skipped: it failed to run ({type(exc).__name__}: {exc})"
        elif spice:
            raise RuntimeError(f"SPICE requested but unavailable: {reason}")
        else:
            skip = f"SPICE skipped: {reason}"
    return scores, skip


def eval_caption(
    result_file: str,
    annotation_file: str,
    max_words: int | None = None,
    id_field: str = "auto",
    skip_missing: bool = False,
    spice: bool | None = None,
    use_meteor: bool = True,
) -> dict[str, Any]:
    """Score an answer jsonl against references; returns metrics, the number of scored images and the report."""
    refs, aliases = load_references(annotation_file)
    preds, joined_refs, report = join_captions(
        read_jsonl(result_file),
        refs,
        aliases,
        id_field=id_field,
        max_words=max_words,
        skip_missing=skip_missing,
    )
    scores, spice_message = caption_metrics(preds, joined_refs, spice=spice, use_meteor=use_meteor)
    if spice_message:
        print(spice_message, file=sys.stderr)
    return {
        **scores,
        "n_images": len(preds),
        "spice": spice_message or "computed",
        "max_words": max_words,
        "tokenizer": "pycocoevalcap PTBTokenizer",
        "result_file": result_file,
        "annotation_file": annotation_file,
        **report,
    }


def _answers_protocol(result_file: str) -> str | None:
    """The protocol recorded in the answers' meta.json (None without one; merged shards have none)."""
    try:
        meta = json.loads(meta_path(result_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return (meta.get("fingerprint") or {}).get("protocol", "ours")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.eval_caption", description=__doc__)
    parser.add_argument("--result-file", required=True, help="answer jsonl (caption in `text`)")
    parser.add_argument(
        "--annotation-file", required=True, help="COCO captions json, {id: [refs]} json or jsonl"
    )
    parser.add_argument("--output-file", default=None, help="json with all metrics and counts")
    parser.add_argument(
        "--max-words", type=int, default=None,
        help="cut predictions to N words (default: no cut; the paper protocol, as the reference's scorer: 20)",
    )
    parser.add_argument(
        "--id-field", default="auto", choices=("auto", *ID_FIELDS), help="answer field holding the image id"
    )
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="leave images without a prediction out (default: score as empty)",
    )
    parser.add_argument("--no-spice", action="store_true", help="never try SPICE")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (saves the JVM start)")
    args = parser.parse_args(argv)
    if args.max_words is None and _answers_protocol(args.result_file) == "paper":
        print("NOTE: these answers were made with --protocol paper, whose scores cut predictions to 20 words: "
              "pass --max-words 20 to score as the reference did", file=sys.stderr)

    result = eval_caption(
        args.result_file,
        args.annotation_file,
        max_words=args.max_words,
        id_field=args.id_field,
        skip_missing=args.skip_missing,
        spice=False if args.no_spice else None,
        use_meteor=not args.no_meteor,
    )
    for name in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE"):
        if name in result:
            print(f"{name}: {result[name]:.4f}")
    print(f"scored images: {result['n_images']} (joined on `{result['id_field']}`)")
    gaps = {
        k: result[k] for k in ("n_missing_predictions", "n_unmatched_predictions", "n_errors", "n_duplicates")
    }
    if any(gaps.values()):
        print("WARNING: " + ", ".join(f"{k}={v}" for k, v in gaps.items()), file=sys.stderr)
        for k in ("missing_prediction_ids", "unmatched_prediction_ids", "error_ids", "duplicate_ids"):
            if result[k]:
                print(f"  {k}: {result[k][:10]}{' ...' if len(result[k]) > 10 else ''}", file=sys.stderr)
    if args.output_file:
        os.makedirs(os.path.dirname(os.path.abspath(args.output_file)), exist_ok=True)
        with open(args.output_file, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
