"""One interpreter session for one docs page's python blocks (started by tests/docs_runner.py).

Reads one JSON request a line on stdin ({"code", "file", "line", "stdout", "stderr"}), runs the code in the
session's one namespace with its stdout and stderr (file descriptors 1 and 2, so subprocesses' output too) sent
to the named files, and answers one JSON line {"exit": N}: 0, the code of a SystemExit, or 1 for an exception,
whose traceback (in the page's lines) goes to the block's stderr. The blocks see /dev/null as stdin.
"""
from __future__ import annotations

import json
import linecache
import os
import sys
import traceback


def run_block(request: dict, namespace: dict) -> int:
    # Pad with the lines above the block so tracebacks give the page's own line numbers.
    source = "\n" * request["line"] + request["code"]
    linecache.cache[request["file"]] = (len(source), None, source.splitlines(True), request["file"])
    try:
        exec(compile(source, request["file"], "exec"), namespace)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # a block's KeyboardInterrupt is its failure too
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)  # without this file's frame
        return 1
    return 0


def main() -> None:
    requests, answers = os.fdopen(os.dup(0), "r"), os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    sys.path[0] = ""  # as `python -c`: the working directory, not tests/
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    saved_err = os.dup(2)
    for line in requests:
        request = json.loads(line)
        with open(request["stdout"], "wb") as out, open(request["stderr"], "wb") as err:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            try:
                code = run_block(request, namespace)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(null, 1)
                os.dup2(saved_err, 2)
        answers.write(json.dumps({"exit": code}) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
