"""LLaVA-Bench review: a pluggable judge scores the reference answer and the model's answer to each question."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from llava.eval.answer_file import answer_error, answer_text, id_key, read_jsonl

DEFAULT_RULE_FILE = Path(__file__).parent / "table" / "rule.json"
DEFAULT_SYSTEM_PROMPT = "You are an impartial and careful assistant who checks how good answers are."
DEFAULT_JUDGE_MODEL = "gpt-4-0314"  # the judge LLaVA-1.5 reported with; record whichever one you use
INVALID_SCORES = [-1.0, -1.0]


class Judge(Protocol):
    """Anything that turns a review prompt into the judge's text reply."""

    def review(self, prompt: str) -> str: ...


class OpenAIJudge:
    """An OpenAI-compatible chat-completions endpoint over urllib; the key comes from OPENAI_API_KEY."""

    def __init__(
        self,
        model: str = DEFAULT_JUDGE_MODEL,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        temperature: float = 0.2,
        max_tokens: int = 1024,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        timeout_s: float = 120.0,
        max_retries: int = 8,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if not key:
            raise RuntimeError("OpenAIJudge needs an API key: set OPENAI_API_KEY")
        self.name = model
        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._key = key
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system_prompt = system_prompt
        self.timeout_s = timeout_s
        self.max_retries = max_retries

    def build_request(self, prompt: str) -> urllib.request.Request:
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": prompt},
            ],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        return urllib.request.Request(
            self.url,
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._key}"},
            method="POST",
        )

    def review(self, prompt: str) -> str:
        delay = 1.0
        for attempt in range(self.max_retries + 1):
            try:
                with urllib.request.urlopen(self.build_request(prompt), timeout=self.timeout_s) as resp:
                    payload = json.loads(resp.read().decode("utf-8"))
                return str(payload["choices"][0]["message"]["content"])
            except urllib.error.HTTPError as exc:
                retryable = exc.code == 429 or exc.code >= 500
                if not retryable or attempt == self.max_retries:
                    raise
                print(f"judge HTTP {exc.code}; retrying in {delay:.0f} s", file=sys.stderr)
            except (urllib.error.URLError, TimeoutError) as exc:
                if attempt == self.max_retries:
                    raise
                print(f"judge unreachable ({exc}); retrying in {delay:.0f} s", file=sys.stderr)
            time.sleep(delay)
            delay = min(delay * 2, 60.0)
        raise RuntimeError("unreachable")


class FakeJudge:
    """A local judge for tests and dry runs: fixed scores (or a function of the prompt); remembers prompts."""

    name = "fake"

    def __init__(self, scores: tuple[float, float] | Callable[[str], tuple[float, float]] = (8, 6)) -> None:
        self.scores = scores
        self.prompts: list[str] = []

    def review(self, prompt: str) -> str:
        self.prompts.append(prompt)
        a, b = self.scores(prompt) if callable(self.scores) else self.scores
        return f"{a:g} {b:g}\nFake review: no model judged these answers."


def parse_score(review: str) -> list[float]:
    """The two scores on the review's first line ("8 6" or "8, 6"); [-1, -1] when it cannot be parsed."""
    first = review.split("\n")[0].replace(",", " ").split()
    if len(first) == 2:
        try:
            return [float(first[0]), float(first[1])]
        except ValueError:
            pass
    print(f"could not parse scores from review: {review[:80]!r}", file=sys.stderr)
    return list(INVALID_SCORES)


def build_review_prompt(
    context: str, question: str, answer1: str, answer2: str, rule: Mapping[str, str]
) -> str:
    """The judge prompt in LLaVA's layout: context, question, the two answers, then the rule's instructions."""
    role = rule["role"]
    return (
        f"[Context]\n{context}\n\n"
        f"[Question]\n{question}\n\n"
        f"[{role} 1]\n{answer1}\n\n[End of {role} 1]\n\n"
        f"[{role} 2]\n{answer2}\n\n[End of {role} 2]\n\n"
        f"[System]\n{rule['prompt']}\n\n"
    )


def _context_text(context: Mapping[str, Any]) -> str:
    caption = context.get("caption", "")
    return "\n".join(caption) if isinstance(caption, list) else str(caption)


def review_answers(
    questions: Sequence[Mapping[str, Any]],
    contexts: Sequence[Mapping[str, Any]],
    reference_answers: Sequence[Mapping[str, Any]],
    model_answers: Sequence[Mapping[str, Any]],
    rules: Mapping[str, Mapping[str, str]],
    judge: Judge,
    done: set[str] | frozenset[str] = frozenset(),
) -> Iterator[dict[str, Any]]:
    """Yield one LLaVA-format review per question not in `done`, joining answers by question_id.

    A missing or error model answer is reviewed as an empty answer (so it scores low) and flagged with
    "answer2_error"; a missing reference answer is an error.
    """
    image_to_context = {c["image"]: c for c in contexts}
    refs = {id_key(a["question_id"]): a for a in reference_answers}
    answers = {id_key(a["question_id"]): a for a in model_answers}
    judge_name = getattr(judge, "name", type(judge).__name__)
    for idx, q in enumerate(questions):
        qid = id_key(q["question_id"])
        if qid in done:
            continue
        category = "llava_bench_" + q["category"]
        if category not in rules:
            raise KeyError(f"category {category!r} not in the rule file (have {sorted(rules)})")
        if qid not in refs:
            raise KeyError(f"question {qid} has no reference answer")
        ref = refs[qid]
        ans = answers.get(qid)
        problem = "missing answer" if ans is None else answer_error(ans)
        prompt = build_review_prompt(
            _context_text(image_to_context.get(q.get("image"), {})),
            str(q["text"]),
            answer_text(ref),
            "" if ans is None else answer_text(ans),
            rules[category],
        )
        review = judge.review(prompt)
        record: dict[str, Any] = {
            "id": idx + 1,
            "question_id": q["question_id"],
            "answer1_id": ref.get("answer_id", ref["question_id"]),
            "answer2_id": ans.get("answer_id", ans["question_id"]) if ans is not None else None,
            "category": category,
            "content": review,
            "tuple": parse_score(review),
            "judge": judge_name,
        }
        if problem:
            record["answer2_error"] = problem
        yield record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.gpt_review", description=__doc__)
    parser.add_argument("-q", "--question", required=True, help="questions.jsonl")
    parser.add_argument(
        "-c", "--context", required=True, help="context.jsonl (image descriptions for the judge)"
    )
    parser.add_argument("-a", "--answer-list", nargs=2, required=True, metavar=("REFERENCE", "MODEL"))
    parser.add_argument("-r", "--rule", default=str(DEFAULT_RULE_FILE))
    parser.add_argument(
        "-o", "--output", required=True, help="review jsonl (appended; reviewed questions skipped)"
    )
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--judge", choices=("openai", "fake"), default="openai", help="fake: offline dry run")
    parser.add_argument("--judge-model", default=DEFAULT_JUDGE_MODEL)
    parser.add_argument("--base-url", default="https://api.openai.com/v1", help="OpenAI-compatible API root")
    parser.add_argument("--temperature", type=float, default=0.2)
    args = parser.parse_args(argv)

    with open(args.rule, encoding="utf-8") as f:
        rules = json.load(f)
    judge: Judge
    if args.judge == "fake":
        judge = FakeJudge()
    else:
        judge = OpenAIJudge(
            args.judge_model, args.base_url, temperature=args.temperature, max_tokens=args.max_tokens
        )
    done: set[str] = set()
    if os.path.isfile(args.output):
        done = {id_key(r["question_id"]) for r in read_jsonl(args.output, "review")}
        print(f"{len(done)} questions already reviewed in {args.output}; skipping them")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    n = 0
    ref_answers, model_answers = (read_jsonl(p) for p in args.answer_list)
    with open(args.output, "a", encoding="utf-8") as out:
        for record in review_answers(
            read_jsonl(args.question, "question"),
            read_jsonl(args.context, "context"),
            ref_answers,
            model_answers,
            rules,
            judge,
            done,
        ):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            n += 1
            if "answer2_error" in record:
                print(
                    f"question {record['question_id']}: {record['answer2_error']} (reviewed as empty)",
                    file=sys.stderr,
                )
    print(f"wrote {n} reviews to {args.output}")
    return n


if __name__ == "__main__":
    main()
