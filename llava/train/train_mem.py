"""The reference scripts' entry point name: the same as `llava.train.train` (attention `auto` picks FlashAttention-2
where it runs)."""

from __future__ import annotations

from llava.train.train import main

if __name__ == "__main__":
    main()
