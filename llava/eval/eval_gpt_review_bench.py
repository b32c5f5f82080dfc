"""The reference's LLaVA-Bench review entry point name; runs `llava.eval.gpt_review`."""

from llava.eval.gpt_review import main

if __name__ == "__main__":
    raise SystemExit(main())
