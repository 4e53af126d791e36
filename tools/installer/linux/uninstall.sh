#!/bin/sh
# Remove what install.sh registered (menu entry, icon, file type, command) and, when this folder
# was copied to ~/.local/opt/Lensbench by install.sh, the folder itself.
# Your sessions, settings (~/.config/Lensbench) and autosave (~/.local/share/Lensbench) are kept.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
bindir=${LENSBENCH_BIN_DIR:-$HOME/.local/bin}

rm -f "$data/applications/lensbench.desktop" "$data/mime/packages/lensbench.xml" \
      "$data/icons/hicolor/scalable/apps/lensbench.svg" \
      "$data/icons/hicolor/256x256/apps/lensbench.png"
if [ -L "$bindir/lensbench" ] && [ "$(readlink "$bindir/lensbench")" = "$here/lensbench" ]; then
  rm -f "$bindir/lensbench"
fi
command -v update-mime-database >/dev/null 2>&1 && update-mime-database "$data/mime" >/dev/null 2>&1 || true
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$data/applications" >/dev/null 2>&1 || true

if [ "$here" = "$HOME/.local/opt/Lensbench" ]; then
  rm -rf "$here"
  echo "Lensbench removed from $here"
else
  echo "Lensbench unregistered; delete $here yourself if you no longer need it."
fi
