import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.conftest import RK_HOST, RK_RUNTIME


def test_version_and_help():
    from rescuekit import __version__

    for cmd in (RK_RUNTIME, RK_HOST):
        out = subprocess.run([*cmd, "--version"], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.strip() == f"rescuekit, version {__version__}", out
    host = subprocess.run([*RK_HOST, "--help"], capture_output=True, text=True).stdout
    runtime = subprocess.run([*RK_RUNTIME, "--help"], capture_output=True, text=True).stdout
    assert "build" in host and "inspect" in host and "capture" in host
    assert "capture" in runtime and " build " not in runtime  # the runtime never carries the builder


def test_console_script_of_this_environment():
    """The `rescuekit` script pip installed next to this interpreter (not one found on PATH) runs the host CLI."""
    script = Path(sysconfig.get_path("scripts")) / ("rescuekit.exe" if sys.platform == "win32" else "rescuekit")
    assert script.is_file(), f"no console script at {script}: is rescuekit installed into {sys.prefix}?"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "build" in out.stdout, out.stderr


def test_copytree_failures_are_one_line():
    import shutil

    from rescuekit.cli import _one_line

    exc = shutil.Error([("/a/x", "/b/x", "[Errno 13] Permission denied"), ("/a/y", "/b/y", "boom")])
    assert _one_line(exc) == "cannot copy /a/x: [Errno 13] Permission denied (and 1 more)"


def test_runtime_imports_only_what_a_verb_needs():
    """WinPE reads the runtime from a RAM disk loaded off slow media: `--help` and a verb's `--help` load click and
    the command modules, not rich, zstandard, blake3, cryptography, the repository or the disk layer (a verb imports
    those when it runs)."""
    code = (
        "import sys\n"
        "from rescuekit.cli import COMMAND_MODULES, _register_all, cli\n"
        "_register_all(cli, COMMAND_MODULES)\n"
        "for args in ([], *[[v] for v in sorted(cli.commands)]):\n"
        "    try:\n"
        "        cli.main(args=[*args, '--help'], standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = ('rich', 'zstandard', 'blake3', 'cryptography', 'rescuekit.repo', 'rescuekit.disk.', 'rescuekit.imaging.capture',"
        " 'rescuekit.imaging.restore')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    r = subprocess.run([*RK_RUNTIME[:2], "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
