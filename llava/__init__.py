"""SQ-LLaVA: training, evaluation and serving of self-questioning vision-language assistants."""

import logging

__version__ = "0.1.0"

# bitsandbytes' import (via peft) tries to fetch an optional CPU 4-bit kernel from the Hub and logs a warning when
# it cannot; nothing here uses that kernel and a user cannot act on the message. Real errors still show.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
