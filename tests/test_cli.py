import subprocess
import sys


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "rescuekit", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "rescuekit" in out.stdout
    out = subprocess.run(["rescuekit", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
