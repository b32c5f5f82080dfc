"""`running_server`: start a web demo in its own process, wait until it answers, stop it (checks and tests)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(args: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
                   timeout: float = 180.0) -> Iterator[str]:
    """Start `python <args> --port P` (a gradio server), wait until it answers, yield its URL, stop it. Its output
    goes to `log`, whose tail is in the error when it exits or does not come up."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, *args, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=dict(env) if env is not None else None, cwd=REPO)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(url + "config", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not up after {timeout:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
