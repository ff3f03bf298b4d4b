#!/usr/bin/env bash
# rescuekit demo (README's first command): install what it needs, build out/rescue.iso -- a real Linux-based rescue
# disc from Debian 12 packages, no Windows files (`rescuekit build --base linux`) -- then boot it in QEMU (TCG) under
# SeaBIOS and OVMF and show the runtime's ready line and the time from QEMU start to the menu.  Exit status != 0
# on any failure.  On a fresh Debian machine run it as root (or with sudo available).
# The WinPE stand-in demo (boot programs that only prove the firmware started the medium) is scripts/demo-standin.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

rescuekit() {  # the console script may land outside PATH (pip --user): the same entry point via python3
  if command -v rescuekit >/dev/null 2>&1; then command rescuekit "$@"
  else python3 -c 'from builder.cli import main; main()' "$@"; fi
}
mkdir -p out
rescuekit build --base linux --output out/rescue.iso

status=0
for fw in bios uefi; do
  log=out/boot-$fw.log
  if python3 scripts/qemu_boot.py out/rescue.iso --firmware "$fw" --memory 512 \
       --expect "RESCUEKIT LINUX READY on ttyS0" --timeout 300 > "$log"; then
    grep -a -o "RESCUEKIT LINUX READY on ttyS0.*" "$log" | sed "s/^/  [$fw] /"
    grep -a "^qemu_boot:" "$log" | sed "s/^/  [$fw] /"
  else
    echo "demo: $fw boot FAILED (serial log: $log)" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "demo: out/rescue.iso booted to the rescuekit runtime under SeaBIOS and OVMF"
exit $status
