"""Caption scorer: equals pycocoevalcap's own scorers, joins by id (not position), reports gaps, skips SPICE."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pycocoevalcap", reason="the eval extra provides pycocoevalcap")
pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="PTB tokenizer and METEOR need Java")

from llava.eval import eval_caption as ec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N_IMAGES, N_REFS = 60, 5
SUBJECTS = ["a dog", "two cats", "a man", "a woman", "a child", "three birds", "a horse", "an old bus"]
VERBS = ["running", "sitting", "standing", "sleeping", "jumping", "walking", "eating"]
PLACES = ["on the grass", "in a kitchen", "near the river", "on a street", "under a tree", "at the beach"]
EXTRAS = ["", "", " with a red ball", " next to a bench", ", looking happy", " in the sun"]
METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


def _sentence(rng: random.Random) -> str:
    s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(PLACES)}{rng.choice(EXTRAS)}."
    return s[0].upper() + s[1:]


def _make_fixture() -> tuple[dict[int, list[str]], dict[int, str]]:
    rng = random.Random(1234)
    image_ids = sorted(rng.sample(range(1, 600_000), N_IMAGES))
    refs = {i: [_sentence(rng) for _ in range(N_REFS)] for i in image_ids}
    preds = {}
    for i in image_ids:
        # A mix of near-copies of a reference, reworded references and unrelated sentences.
        kind = rng.random()
        if kind < 0.3:
            preds[i] = rng.choice(refs[i][:N_REFS])
        elif kind < 0.7:
            words = rng.choice(refs[i]).rstrip(".").split()
            words[rng.randrange(len(words))] = rng.choice(["big", "small", "blue", "the"])
            preds[i] = " ".join(words)
        else:
            preds[i] = _sentence(rng)
    return refs, preds


def _answer_rows(preds: dict[int, str]) -> list[dict]:
    return [
        {
            "question_id": i,
            "prompt": "Describe the image briefly.",
            "text": t,
            "answer_id": f"a{i}",
            "model_id": "m",
            "metadata": {},
        }
        for i, t in preds.items()
    ]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("captions")
    refs, preds = _make_fixture()
    coco = {
        "images": [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in refs],
        "annotations": [
            {"image_id": i, "id": 10 * i + j, "caption": c} for i in refs for j, c in enumerate(refs[i])
        ],
    }
    (root / "captions_coco.json").write_text(json.dumps(coco))
    rows = _answer_rows(preds)
    _write_jsonl(root / "answers.jsonl", rows)
    shuffled = list(rows)
    random.Random(7).shuffle(shuffled)
    assert [r["question_id"] for r in shuffled] != [r["question_id"] for r in rows]
    _write_jsonl(root / "answers_shuffled.jsonl", shuffled)
    return root, refs, preds


@pytest.fixture(scope="module")
def ours(fixture_files):
    root, _, _ = fixture_files
    return ec.eval_caption(str(root / "answers.jsonl"), str(root / "captions_coco.json"))


def test_metrics_equal_pycocoevalcap_scorers(fixture_files, ours):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    _, refs, preds = fixture_files
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in refs[i]] for i in refs})
    res = tokenizer.tokenize({i: [{"caption": preds[i]}] for i in refs})
    direct = dict(zip(METRICS[:4], Bleu(4).compute_score(gts, res, verbose=0)[0]))
    direct["METEOR"] = Meteor().compute_score(gts, res)[0]
    direct["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    direct["CIDEr"] = Cider().compute_score(gts, res)[0]

    print("\nmetric      eval_caption   pycocoevalcap")
    for name in METRICS:
        print(f"{name:<10} {ours[name]:>13.6f} {float(direct[name]):>15.6f}")
        assert ours[name] == pytest.approx(float(direct[name]), abs=1e-6), name
    assert ours["n_images"] == N_IMAGES
    assert ours["n_missing_predictions"] == ours["n_unmatched_predictions"] == ours["n_errors"] == 0
    assert ours["id_field"] == "question_id"
    assert 0.0 < ours["Bleu_4"] < ours["Bleu_1"] < 1.0 and ours["CIDEr"] > 0.5  # a non-degenerate fixture


def test_spice_is_skipped_with_one_message_when_unavailable(ours, monkeypatch, capsys):
    reason = ec.spice_unavailable_reason()
    if reason is not None:  # this machine (offline, no CoreNLP): the main run skipped it
        assert ours["spice"].startswith("SPICE skipped") and "SPICE" not in ours
    monkeypatch.setattr(ec, "spice_unavailable_reason", lambda: "CoreNLP missing (test)")
    scores, message = ec.caption_metrics({"1": "a dog"}, {"1": ["a dog on grass", "a dog"]}, use_meteor=False)
    assert message == "SPICE skipped: CoreNLP missing (test)" and "SPICE" not in scores
    with pytest.raises(RuntimeError, match="SPICE requested"):
        ec.caption_metrics({"1": "a dog"}, {"1": ["a dog"]}, spice=True, use_meteor=False)
    _, message = ec.caption_metrics({"1": "a dog"}, {"1": ["a dog"]}, spice=False, use_meteor=False)
    assert message == "SPICE skipped: disabled (--no-spice)"


def test_shuffled_prediction_file_gives_identical_scores(fixture_files, ours):
    root, _, _ = fixture_files
    shuffled = ec.eval_caption(str(root / "answers_shuffled.jsonl"), str(root / "captions_coco.json"))
    for name in METRICS:
        assert shuffled[name] == pytest.approx(ours[name], abs=1e-12), name
    assert shuffled["n_images"] == N_IMAGES


def test_missing_unmatched_and_error_rows_are_reported(fixture_files, ours, tmp_path):
    root, refs, preds = fixture_files
    ids = list(refs)
    rows = _answer_rows(preds)
    missing_id, error_id = ids[3], ids[10]
    rows = [r for r in rows if r["question_id"] != missing_id]
    for r in rows:
        if r["question_id"] == error_id:
            r["text"], r["error"] = "", "image unreadable"
    rows.append({"question_id": 999_999_999, "text": "a caption for an image nobody annotated"})
    rows.append(dict(rows[0], text="a second answer for the same image"))
    path = _write_jsonl(tmp_path / "gappy.jsonl", rows)

    result = ec.eval_caption(str(path), str(root / "captions_coco.json"))
    assert result["n_missing_predictions"] == 1 and result["missing_prediction_ids"] == [str(missing_id)]
    assert result["n_errors"] == 1 and result["error_ids"] == [str(error_id)]
    assert result["n_unmatched_predictions"] == 1 and result["unmatched_prediction_ids"] == ["999999999"]
    assert result["n_duplicates"] == 1
    assert result["n_images"] == N_IMAGES  # the missing one is scored as an empty caption
    assert result["CIDEr"] < ours["CIDEr"]

    skipped = ec.eval_caption(
        str(path), str(root / "captions_coco.json"), skip_missing=True, use_meteor=False
    )
    assert skipped["n_images"] == N_IMAGES - 1 and skipped["missing_predictions_scored_as"] == "skipped"


def test_reference_formats_and_image_name_join_agree(fixture_files, ours, tmp_path):
    root, refs, preds = fixture_files
    plain = tmp_path / "refs.json"
    plain.write_text(json.dumps({str(i): refs[i] for i in refs}))
    lines = _write_jsonl(tmp_path / "refs.jsonl", [{"question_id": i, "captions": refs[i]} for i in refs])
    # Answers that carry the COCO file name (in metadata) and a running index as question_id.
    by_name = [
        {"question_id": n, "text": preds[i], "metadata": {"image": f"COCO_val2014_{i:012d}.jpg"}}
        for n, i in enumerate(refs)
    ]
    by_name_path = _write_jsonl(tmp_path / "by_name.jsonl", by_name)
    for ann, answers in (
        (plain, root / "answers.jsonl"),
        (lines, root / "answers.jsonl"),
        (root / "captions_coco.json", by_name_path),
    ):
        result = ec.eval_caption(str(answers), str(ann), use_meteor=False, spice=False)
        assert result["n_images"] == N_IMAGES
        for name in ("Bleu_4", "ROUGE_L", "CIDEr"):
            assert result[name] == pytest.approx(ours[name], abs=1e-12), (ann.name, name)
    assert result["id_field"] == "image"


def test_no_word_cut_by_default():
    refs = {"1": ["a b c"]}
    long_text = " ".join(f"w{i}" for i in range(40))
    preds, _, _ = ec.join_captions([{"question_id": 1, "text": long_text}], refs)
    assert len(preds["1"].split()) == 40
    preds, _, _ = ec.join_captions([{"question_id": 1, "text": long_text}], refs, max_words=20)
    assert len(preds["1"].split()) == 20


def test_cli_writes_json_into_a_new_folder(fixture_files, tmp_path):
    root, _, _ = fixture_files
    out = tmp_path / "new" / "dir" / "scores.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llava.eval.eval_caption",
            "--result-file",
            str(root / "answers.jsonl"),
            "--annotation-file",
            str(root / "captions_coco.json"),
            "--output-file",
            str(out),
            "--no-meteor",
            "--no-spice",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["n_images"] == N_IMAGES and "CIDEr" in data and "METEOR" not in data
    assert "CIDEr:" in proc.stdout and "SPICE skipped: disabled" in proc.stderr
