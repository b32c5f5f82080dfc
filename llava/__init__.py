"""SQ-LLaVA: training, evaluation and serving of self-questioning vision-language assistants."""

import logging

__version__ = "0.1.0"

# bitsandbytes' import (via peft) tries to fetch an optional CPU 4-bit kernel from the Hub and logs a warning when
# it cannot (or, offline, that it skipped the kernel's trust check); nothing here uses that kernel and a user cannot
# act on the message. Real errors still show.
for _name in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub"):
    logging.getLogger(_name).setLevel(logging.ERROR)
