import subprocess
import sys


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "rescuekit", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "rescuekit" in out.stdout
    out = subprocess.run(["rescuekit", "--help"], capture_output=True, text=True)
    assert out.returncode == 0


def test_copytree_failures_are_one_line():
    import shutil

    from rescuekit.cli import _one_line

    exc = shutil.Error([("/a/x", "/b/x", "[Errno 13] Permission denied"), ("/a/y", "/b/y", "boom")])
    assert _one_line(exc) == "cannot copy /a/x: [Errno 13] Permission denied (and 1 more)"
