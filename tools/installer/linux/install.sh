#!/bin/sh
# Install Lensbench from this unpacked folder for the current user (no root needed):
#   ./install.sh            copy this folder to ~/.local/opt/Lensbench and register it
#   ./install.sh --here     register this folder where it is (it must stay there)
#   ./install.sh --prefix /opt/Lensbench    copy it there instead (run as root for /opt)
# Registers: a menu entry (.desktop), the icon, the *.lensbench file type (double-click opens
# the session in Lensbench) and a `lensbench` command in ~/.local/bin.
# Undo with uninstall.sh (in the installed folder).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
bindir=${LENSBENCH_BIN_DIR:-$HOME/.local/bin}
target=$HOME/.local/opt/Lensbench
mode=copy

while [ $# -gt 0 ]; do
  case "$1" in
    --here) mode=here ;;
    --prefix) shift; target=${1:?--prefix needs a folder} ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

if [ ! -x "$here/lensbench" ]; then
  echo "install.sh: run me from the unpacked Lensbench folder (lensbench not found beside me)" >&2
  exit 1
fi

if [ "$mode" = here ]; then
  target=$here
elif [ "$target" != "$here" ]; then
  echo "Copying Lensbench to $target ..."
  if [ -e "$target" ]; then
    [ -x "$target/lensbench" ] || { echo "install.sh: $target exists and is not a Lensbench folder" >&2; exit 1; }
    rm -rf "$target"
  fi
  mkdir -p "$(dirname "$target")"
  cp -a "$here" "$target"
fi

exe=$target/lensbench
# The Exec value (Desktop Entry spec): the path in double quotes with \ " ` $ escaped, % doubled,
# then every backslash escaped again (string level); finally escaped for sed's replacement.
quoted=$(printf '%s' "$exe" | sed -e 's/[\\"`$]/\\&/g' -e 's/%/%%/g' -e 's/\\/\\\\/g')
sed_repl() { printf '%s' "$1" | sed -e 's/[\\&|]/\\&/g'; }
exec_value=$(sed_repl "\"$quoted\" %f")
tryexec_value=$(sed_repl "$exe")

mkdir -p "$data/applications" "$data/mime/packages" "$data/icons/hicolor/scalable/apps" \
         "$data/icons/hicolor/256x256/apps" "$bindir"
sed -e "s|^Exec=.*|Exec=$exec_value|" -e "s|^TryExec=.*|TryExec=$tryexec_value|" \
    "$target/share/lensbench.desktop" > "$data/applications/lensbench.desktop"
cp "$target/share/lensbench-mime.xml" "$data/mime/packages/lensbench.xml"
cp "$target/share/lensbench.svg" "$data/icons/hicolor/scalable/apps/lensbench.svg"
cp "$target/share/lensbench.png" "$data/icons/hicolor/256x256/apps/lensbench.png"
ln -sf "$exe" "$bindir/lensbench"

# Refresh the caches where the tools exist (they do on desktop systems); failures are harmless.
command -v update-mime-database >/dev/null 2>&1 && update-mime-database "$data/mime" >/dev/null 2>&1 || true
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$data/applications" >/dev/null 2>&1 || true
command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t "$data/icons/hicolor" >/dev/null 2>&1 || true
command -v xdg-mime >/dev/null 2>&1 && xdg-mime default lensbench.desktop application/x-lensbench-session >/dev/null 2>&1 || true

echo "Lensbench is installed in $target"
echo "  menu entry: $data/applications/lensbench.desktop"
echo "  command:    $bindir/lensbench   (self-check: lensbench --self-test)"
