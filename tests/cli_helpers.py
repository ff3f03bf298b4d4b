"""Running the runtime's CLI in the tests (``python -P -m rescuekit``, as WinPE and the Linux base start it) and
checking its output: one helper for every test directory."""
from __future__ import annotations

import json
import os
import subprocess

from tests.conftest import RK_RUNTIME


def rk(*args: object, check: bool = True, env: dict | None = None, stdin: str | None = None,
       timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``rescuekit ARGS``; ``check``: a non-zero exit fails the test with the output."""
    res = subprocess.run([*RK_RUNTIME, *map(str, args)], capture_output=True, text=True, input=stdin,
                         env={**os.environ, **(env or {})}, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"rescuekit {' '.join(map(str, args))} failed ({res.returncode}):\n"
                             f"{res.stdout}\n{res.stderr}")
    return res


def rk_json(*args: object) -> dict:
    return json.loads(rk(*args, "--json").stdout)


def one_line_error(res: subprocess.CompletedProcess, *words: str, alone: bool = True) -> str:
    """The ``rescuekit: error: ...`` line a failed run ends with: no traceback, ``words`` in it; ``alone``: nothing
    else on stderr (False: warnings may come before it)."""
    assert res.returncode != 0, res.stdout
    lines = res.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("rescuekit: error: ") and "Traceback" not in res.stderr, res.stderr
    assert not alone or len(lines) == 1, res.stderr
    assert all(w in lines[-1] for w in words), lines[-1]
    return lines[-1]
