"""Ask one question about one or more images and print the answer (`--sq`: after self-questioning)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from PIL import Image

from llava.inference import flags
from llava.mm_utils import load_image


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.run_llava", description=__doc__)
    flags.add_model_args(parser)
    parser.add_argument("--image-file", "--image_file", dest="image_file", required=True,
                        help="image path or http(s) URL; several separated by --sep")
    parser.add_argument("--query", required=True, help="the question; <image> marks where images go")
    parser.add_argument("--sep", default=",", help="separator of several --image-file entries")
    parser.add_argument("--stream", action="store_true", help="print the answer while it is generated")
    flags.add_decoding_args(parser, flags.BENCHMARK.replace(max_new_tokens=512))
    flags.add_sq_args(parser, flags.SQDefaults(n_shot=5, temperature=1.0, top_p=0.9, top_k=64, max_new_tokens=200))
    return parser


def open_image(source: str) -> Image.Image:
    if source.startswith(("http://", "https://")):
        from urllib.request import urlopen

        with urlopen(source, timeout=30) as response:  # noqa: S310 - a user-given URL is the point
            return load_image(response.read())
    return load_image(source)


def main(argv: Sequence[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    images = [open_image(s.strip()) for s in args.image_file.split(args.sep) if s.strip()]
    engine = flags.load_engine_or_exit(args)
    settings = flags.decoding_from_args(args)
    sq = flags.sq_from_args(args, settings)
    if sq is not None:
        from llava.inference.self_questioning import answer_with_self_questioning

        if len(images) != 1:
            raise SystemExit("--sq takes exactly one image")
        answer, context = answer_with_self_questioning(engine, images, [args.query], sq, settings, ids=["query"])[0]
        print(f"[description] {context.description}", file=sys.stderr)
        for q, a in context.qa:
            print(f"[self-question] {q}\n[self-answer] {a}", file=sys.stderr)
        print(answer)
        return answer
    request = engine.request(args.query, images, id="query")
    if args.stream:
        pieces = []
        for piece in engine.stream(request, settings):
            pieces.append(piece)
            print(piece, end="", flush=True)
        print()
        return "".join(pieces).strip()
    answer = engine.generate([request], settings, batch_size=1)[0]
    print(answer)
    return answer


if __name__ == "__main__":
    main()
