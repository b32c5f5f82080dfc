"""The former home of `llava.shapesworld` (the synthetic world is its own package, outside the core data pipeline):
`from llava.data.shapesworld import ...` and `python -m llava.data.shapesworld ...` keep working."""

from llava.shapesworld import *  # noqa: F403
from llava.shapesworld import __all__  # noqa: F401

if __name__ == "__main__":
    from llava.shapesworld.__main__ import main

    main()
