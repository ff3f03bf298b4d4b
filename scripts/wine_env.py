#!/usr/bin/env python3
"""Run the Windows rescuekit runtime of a built ISO under Wine (the test suite's Windows tier; usable by hand).

What it does, and why (Debian's wine 8.0, 64-bit only):

- ``extract_x_tree(ISO, DIR)``: ``sources/boot.wim`` out of the ISO with ``xorriso -osirrox`` (not rescuekit's own
  reader), then ``X:\\rescuekit`` and ``X:\\Windows\\System32\\startnet.cmd`` out of image 1 with ``wimlib-imagex
  extract``: the embeddable CPython, the win_amd64 wheels and the runtime package exactly as the medium has them.
- ``WinePrefix``: a throw-away ``WINEPREFIX`` (``WINEDEBUG=-all``, mono/gecko installers off, no display).
  Wine 8.0 has no ``bcryptprimitives.dll``, which the Rust-built blake3 ``.pyd`` imports ``ProcessPrng`` from
  (Windows 10/11 and WinPE have it); the prefix gets a tiny shim DLL (ProcessPrng -> advapi32 SystemFunction036,
  i.e. RtlGenRandom) built with ``x86_64-w64-mingw32-gcc``. It is test harness only, never part of the product.
- The wineserver is started persistent, and the prefix's services (started by the first Windows process) are
  started with their standard handles on /dev/null: otherwise they inherit the first test's pipes and keep them
  open, and reading that test's output never ends.
- Windows programs are run with stdin, stdout and stderr on pipes: Wine 8 gives python.exe an invalid standard
  handle for a regular file or /dev/null ("init_sys_streams: can't initialize sys standard streams").
- Z: is the Linux root, so ``/tmp/x`` is ``Z:\\tmp\\x`` (``winpath``); ``map_drive`` points a drive letter (X: for
  the extracted tree, D: for a repository) at a Linux folder through ``$WINEPREFIX/dosdevices``.
- ``stub_exe``: a small logging program (built with mingw too) that stands in for WinPE's wpeinit, wpeutil,
  powercfg and drvload: one line per run, module path and argv (as the C runtime split them) separated by tabs.

By hand::

    python3 scripts/wine_env.py extract out/rescue.iso /tmp/x          # the X: tree
    python3 scripts/wine_env.py prefix /tmp/wp                         # prefix + shim (once)
    python3 scripts/wine_env.py run /tmp/wp /tmp/x -- images 'Z:\\tmp\\repo' --json
    python3 scripts/wine_env.py stop /tmp/wp                           # stop the prefix's wineserver
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SHIM_C = r"""
/* Test harness only: Wine 8.0 lacks bcryptprimitives.dll; blake3's .pyd imports ProcessPrng from it. */
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length); /* advapi32 RtlGenRandom */
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length) {
        ULONG n = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, n)) return FALSE;
        data += n;
        length -= n;
    }
    return TRUE;
}
BOOL WINAPI DllMain(HINSTANCE h, DWORD reason, LPVOID reserved) { (void)h; (void)reason; (void)reserved; return TRUE; }
"""
SHIM_DEF = "LIBRARY bcryptprimitives.dll\nEXPORTS\n    ProcessPrng\n"

STUB_C = r"""
/* Stand-in for a WinPE tool: appends "<module path>\t<argv1>\t<argv2>..." (UTF-8, CRLF) to %RESCUEKIT_STUB_LOG%. */
#include <windows.h>
#include <string.h>
static void put(HANDLE h, const wchar_t *s)
{
    char buf[8192];
    int n = WideCharToMultiByte(CP_UTF8, 0, s, -1, buf, sizeof buf, NULL, NULL);
    DWORD done;
    if (n > 1) WriteFile(h, buf, (DWORD)(n - 1), &done, NULL);
}
int wmain(int argc, wchar_t **argv)
{
    wchar_t log[1024], self[1024];
    if (!GetEnvironmentVariableW(L"RESCUEKIT_STUB_LOG", log, 1024)) return 9;
    HANDLE h = CreateFileW(log, FILE_APPEND_DATA, FILE_SHARE_READ | FILE_SHARE_WRITE, NULL, OPEN_ALWAYS, 0, NULL);
    if (h == INVALID_HANDLE_VALUE) return 8;
    GetModuleFileNameW(NULL, self, 1024);
    put(h, self);
    for (int i = 1; i < argc; i++) { put(h, L"\t"); put(h, argv[i]); }
    put(h, L"\r\n");
    CloseHandle(h);
    return 0;
}
"""
STUB_TOOLS = ("wpeinit", "wpeutil", "powercfg", "drvload")
CC = "x86_64-w64-mingw32-gcc"
MINGW_PACKAGE = "gcc-mingw-w64-x86-64"


class WineUnavailable(RuntimeError):
    """wine cannot run 64-bit programs here (not installed, or no wine64 loader)."""


def wine_loader() -> str:
    """The 64-bit loader (Debian's ``/usr/bin/wine`` wrapper prints a wine32 hint on every run)."""
    for cand in (shutil.which("wine64"), "/usr/lib/wine/wine64", "/usr/lib64/wine/wine64"):
        if cand and os.access(cand, os.X_OK):
            return cand
    wine = shutil.which("wine")
    if wine is None:
        raise WineUnavailable("wine is not installed (apt-get install wine wine64)")
    return wine


def winpath(path: str | os.PathLike) -> str:
    """A Linux path as Wine sees it through Z: (``/tmp/x`` -> ``Z:\\tmp\\x``)."""
    p = Path(path).absolute()
    return "Z:" + str(p).replace("/", "\\")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {(res.stderr or res.stdout).strip()[-800:]}")
    return res


def mingw_build(source: str, out: Path, *extra: str) -> Path:
    """Compile ``source`` (C) with mingw-w64 into ``out`` (.exe or .dll); reproducible (no timestamp)."""
    if shutil.which(CC) is None:
        raise RuntimeError(f"{CC} is missing: apt-get install {MINGW_PACKAGE}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, out.stem + ".c")
        src.write_text(source)
        args = [str(src)]
        for i, e in enumerate(extra):
            if e.startswith("@def:"):  # a .def file's text
                d = Path(tmp, f"{out.stem}{i}.def")
                d.write_text(e[5:])
                args.append(str(d))
            else:
                args.append(e)
        _run([CC, "-O2", "-s", "-Wl,--no-insert-timestamp", "-o", str(out), *args])
    return out


def build_shim(out: Path) -> Path:
    """bcryptprimitives.dll exporting ProcessPrng (needs only advapi32/kernel32, no C runtime)."""
    return mingw_build(SHIM_C, out, "-shared", "-nostdlib", "-Wl,-e,DllMain", f"@def:{SHIM_DEF}",
                       "-ladvapi32", "-lkernel32")


def build_stub(out: Path) -> Path:
    """The logging stand-in for wpeinit/wpeutil/powercfg/drvload."""
    return mingw_build(STUB_C, out, "-municode")


def make_stub_dir(dest: Path, tools: tuple[str, ...] = STUB_TOOLS) -> Path:
    """``dest/<tool>.exe`` for each WinPE tool (copies of one stub)."""
    dest.mkdir(parents=True, exist_ok=True)
    stub = build_stub(dest / "stub.bin")
    for t in tools:
        shutil.copyfile(stub, dest / f"{t}.exe")
    stub.unlink()
    return dest


def extract_x_tree(iso: Path, dest: Path) -> Path:
    """``X:\\rescuekit`` and ``X:\\Windows\\System32\\startnet.cmd`` of the ISO's boot.wim into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        wim = Path(tmp, "boot.wim")
        _run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/sources/boot.wim", str(wim)])
        _run(["wimlib-imagex", "extract", str(wim), "1", "/rescuekit", "/Windows/System32/startnet.cmd",
              f"--dest-dir={dest}", "--preserve-dir-structure", "--no-acls"])
    return dest


def _text(data: bytes) -> str:
    """A Windows program's output: UTF-8 (what the runtime writes to a pipe), CRLF -> LF."""
    return data.decode("utf-8", "replace").replace("\r\n", "\n")


class WinePrefix:
    """A 64-bit Wine prefix in ``path`` with the ProcessPrng shim; ``start()`` before ``run()``, ``stop()`` after."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.loader = wine_loader()
        self.env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        self.env.update(WINEPREFIX=str(self.path), WINEDEBUG="-all", WINEARCH="win64",
                        WINEDLLOVERRIDES="mscoree,mshtml=;winemenubuilder.exe=d")

    @property
    def system32(self) -> Path:
        return self.path / "drive_c" / "windows" / "system32"

    def _quiet(self, cmd: list[str], timeout: int = 300) -> int:
        return subprocess.run(cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True, timeout=timeout).returncode

    def start(self) -> "WinePrefix":
        """Create the prefix if needed (wineboot, shim), start a persistent wineserver and the services."""
        self.path.mkdir(parents=True, exist_ok=True)
        # persistent: no 3 s server start for every program (and services keep /dev/null handles, see above)
        self._quiet(["wineserver", "-p"])
        if not (self.system32 / "kernel32.dll").is_file():
            rc = self._quiet([self.loader, "wineboot", "--init"])
            if rc != 0 or not (self.system32 / "kernel32.dll").is_file():
                raise WineUnavailable(f"wine cannot make a 64-bit prefix in {self.path} (wineboot exit {rc})")
        shim = self.system32 / "bcryptprimitives.dll"
        if not shim.is_file():
            build_shim(shim)
        rc = self._quiet([self.loader, "cmd.exe", "/c", "exit 7"])  # starts the services with /dev/null handles
        if rc != 7:
            raise WineUnavailable(f"wine cannot run cmd.exe in {self.path} (exit {rc})")
        return self

    def stop(self) -> None:
        """Stop this prefix's wineserver and its processes (``wineserver -k`` only reaches this prefix)."""
        self._quiet(["wineserver", "-k"], timeout=60)
        self._quiet(["wineserver", "-w"], timeout=60)

    def map_drive(self, letter: str, target: Path) -> None:
        """Point drive ``letter`` (e.g. "x") at the Linux folder ``target``."""
        link = self.path / "dosdevices" / f"{letter.lower()}:"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(target).absolute())

    def popen(self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
        """Start a Windows program with pipes for stdin/stdout/stderr (bytes)."""
        return subprocess.Popen([self.loader, *args], env={**self.env, **(env or {})}, cwd=cwd,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def run(self, args: list[str], *, input: str = "", env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: int = 300) -> subprocess.CompletedProcess:
        """Run a Windows program through pipes; stdout/stderr decoded as UTF-8, CRLF -> LF."""
        proc = self.popen(args, env, cwd)
        try:
            out, err = proc.communicate(input.replace("\n", "\r\n").encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        return subprocess.CompletedProcess([self.loader, *args], proc.returncode, _text(out), _text(err))


class Runtime:
    """The runtime of an extracted X: tree: ``python.exe -m rescuekit ...`` under a WinePrefix.

    ``pycache`` (a Linux folder): compiled modules go there (``-X pycache_prefix``), not into the tree, so each
    run does not compile rich and click again (the launcher's ``-B`` run does; that is what WinPE does).
    """

    def __init__(self, prefix: WinePrefix, tree: Path, pycache: Path | None = None) -> None:
        self.prefix = prefix
        self.tree = Path(tree)
        self.python = self.tree / "rescuekit" / "python" / "python.exe"
        self.pycache = pycache

    def _py_args(self) -> list[str]:
        return [str(self.python)] + (["-X", f"pycache_prefix={winpath(self.pycache)}"] if self.pycache else ["-B"])

    def compile(self) -> None:
        """Import every runtime module once (dont_write_bytecode off) so later runs load .pyc from ``pycache``."""
        if self.pycache is None:
            return
        code = ("import sys, pkgutil, importlib; sys.dont_write_bytecode = False; import rescuekit; "
                "[importlib.import_module(m.name) for m in pkgutil.walk_packages(rescuekit.__path__, 'rescuekit.')]")
        res = self.prefix.run([*self._py_args(), "-c", code])
        if res.returncode != 0:
            raise RuntimeError(f"the runtime does not import under Wine ({res.returncode}): {res.stderr[-2000:]}")

    def rk(self, *args: object, input: str = "", env: dict[str, str] | None = None,
           timeout: int = 300) -> subprocess.CompletedProcess:
        return self.prefix.run([*self._py_args(), "-m", "rescuekit", *map(str, args)], input=input, env=env,
                               timeout=timeout)

    def popen(self, *args: object) -> subprocess.Popen:
        return self.prefix.popen([*self._py_args(), "-m", "rescuekit", *map(str, args)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("extract", help="the X: tree out of an ISO's boot.wim")
    p.add_argument("iso", type=Path)
    p.add_argument("dest", type=Path)
    p = sub.add_parser("prefix", help="make (or start) a prefix with the ProcessPrng shim")
    p.add_argument("prefix", type=Path)
    p = sub.add_parser("run", help="python.exe -m rescuekit ARGS from the tree (X: mapped to it)")
    p.add_argument("prefix", type=Path)
    p.add_argument("tree", type=Path)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p = sub.add_parser("stop", help="stop the prefix's wineserver")
    p.add_argument("prefix", type=Path)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "extract":
            print(extract_x_tree(a.iso, a.dest))
        elif a.cmd == "prefix":
            print(WinePrefix(a.prefix).start().path)
        elif a.cmd == "stop":
            WinePrefix(a.prefix).stop()
        else:
            prefix = WinePrefix(a.prefix).start()
            prefix.map_drive("x", a.tree)
            args = a.args[1:] if a.args[:1] == ["--"] else a.args
            res = Runtime(prefix, a.tree).rk(*args, input=sys.stdin.read() if not sys.stdin.isatty() else "")
            sys.stdout.write(res.stdout)
            sys.stderr.write(res.stderr)
            return res.returncode
    except (RuntimeError, WineUnavailable) as exc:
        print(f"wine_env: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
