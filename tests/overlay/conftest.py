"""Fixtures for the overlay tests: a tiny real WIM, a fake embeddable zip, real win_amd64 wheels, an HTTP server."""
from __future__ import annotations

import functools
import http.server
import io
import subprocess
import threading
import zipfile
from pathlib import Path

import pytest

from tests.conftest import require_tools

PTH_312 = "python312.zip\r\n.\r\n\r\n# Uncomment to run site.main() automatically\r\n#import site\r\n"


def make_embed_zip(path: Path, tag: str = "312", extra: dict[str, bytes] | None = None) -> Path:
    """A zip shaped like python-3.X.Y-embed-amd64.zip (fake binaries, real layout and ._pth text)."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("encodings/__init__.py", "")
    files = {
        "python.exe": b"MZ fake python.exe",
        "pythonw.exe": b"MZ fake pythonw.exe",
        f"python{tag}.dll": b"MZ fake dll",
        "python3.dll": b"MZ fake python3.dll",
        f"python{tag}._pth": PTH_312.replace("312", tag).encode(),
        f"python{tag}.zip": inner.getvalue(),
        "vcruntime140.dll": b"MZ fake vcruntime140",
        "vcruntime140_1.dll": b"MZ fake vcruntime140_1",
        "_ctypes.pyd": b"MZ fake pyd",
        **(extra or {}),
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


@pytest.fixture(scope="session")
def embed_zip(tmp_path_factory) -> Path:
    return make_embed_zip(tmp_path_factory.mktemp("embed") / "python-3.12.10-embed-amd64.zip")


@pytest.fixture(scope="session")
def wheelhouse(request) -> Path:
    """Real cp312 win_amd64 wheels of the runtime's deps, downloaded from PyPI once (kept in the pytest cache)."""
    from builder.wheels import download_wheels, wheel_cache_dir

    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    dest = Path(cache.mkdir("rescuekit-wheels-cp312-win_amd64")) if cache else wheel_cache_dir("3.12")
    return download_wheels("3.12", dest)


@pytest.fixture(scope="session")
def tiny_wim(tmp_path_factory) -> Path:
    """A real 1-image bootable WIM with a WinPE-shaped tree (Windows/System32/startnet.cmd = wpeinit)."""
    require_tools("wimlib-imagex")
    root = tmp_path_factory.mktemp("tinywim")
    tree = root / "tree"
    (tree / "Windows" / "System32").mkdir(parents=True)
    (tree / "Windows" / "System32" / "startnet.cmd").write_bytes(b"wpeinit\r\n")
    (tree / "Windows" / "System32" / "winpeshl.ini").write_bytes(b"[LaunchApps]\r\nfoo.exe\r\n")
    (tree / "setup.exe").write_bytes(b"MZ setup")
    wim = root / "boot.wim"
    subprocess.run(["wimlib-imagex", "capture", str(tree), str(wim), "tiny", "--boot"], check=True,
                   capture_output=True)
    return wim


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def http_dir(tmp_path):
    """Serve a fresh directory on 127.0.0.1; yields (dir, base_url, request_log)."""
    root = tmp_path / "www"
    root.mkdir()
    hits: list[str] = []

    class Handler(_QuietHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
