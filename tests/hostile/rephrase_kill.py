"""Run `reasonseg rephrase ARGS` as the CLI does, and kill -9 it at a precise point of its own code.

    python rephrase_kill.py MODULE:NAME[.METHOD] before|after N [MATCH] -- ARGS...

The process sends itself SIGKILL just before (or just after) the N-th call of that function whose arguments'
text contains MATCH (all calls when MATCH is empty): nothing is mocked, the run dies where a real kill would hit.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys


def main() -> None:
    split = sys.argv.index("--")
    target, when, nth, *match = sys.argv[1:split]
    module_name, qualname = target.split(":")
    owner = importlib.import_module(module_name)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    seen = [0]

    def killing(*args, **kwargs):
        hit = not match or match[0] in repr(args) + repr(kwargs)
        if hit:
            seen[0] += 1
        if hit and when == "before" and seen[0] == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if hit and when == "after" and seen[0] == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, killing)
    sys.argv = ["reasonseg", "rephrase", *sys.argv[split + 1:]]
    from reasonseg.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
