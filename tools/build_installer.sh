#!/usr/bin/env bash
# Build the Lensbench app bundle and the archive a course hands out (Linux; see README
# "Student installer" for macOS and Windows).
#
#   tools/build_installer.sh                 clean build environment (build/venv, CPU torch), build,
#                                            check, pack: dist/Lensbench-<version>-linux-x86_64.tar.xz
#   tools/build_installer.sh --python PY     use an environment that already has Lensbench's
#                                            dependencies and PyInstaller (pip install -e .[build])
#   options: --dist DIR (default dist)  --no-check (skip the self-test of the built app)
#            --no-archive
#
# CPU torch comes from the PyTorch CPU index (no CUDA libraries), or set LENSBENCH_TORCH.
# The check runs the built app's --self-test with no network (when `unshare -n` works), no Python
# on PATH, from a folder whose path has spaces, made read-only, and fails if the app wrote
# anything inside the bundle. The report (sizes, glibc needed, forbidden files) is printed and
# saved as <dist>/build-report.json.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=""
DIST=dist
CHECK=1
ARCHIVE=1
TORCH_SPEC=${LENSBENCH_TORCH:-"torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"}

while [ $# -gt 0 ]; do
  case "$1" in
    --python) PY=$2; shift ;;
    --dist) DIST=$2; shift ;;
    --no-check) CHECK=0 ;;
    --no-archive) ARCHIVE=0 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "build_installer: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$DIST"
DIST=$(cd "$DIST" && pwd)

if [ -z "$PY" ]; then
  VENV=build/venv
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating the build environment $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # shellcheck disable=SC2086  # TORCH_SPEC holds pip arguments
    "$VENV/bin/python" -m pip install -q $TORCH_SPEC
    "$VENV/bin/python" -m pip install -q ".[build]"
  fi
  PY=$VENV/bin/python
fi

VERSION=$("$PY" -c "from tools.installer.platform_info import project_version as v; print(v())")
echo "== Lensbench $VERSION with $("$PY" -c 'import sys; print(sys.executable)')"
"$PY" - <<'EOF'
import torch
if torch.version.cuda is not None or torch.cuda.is_available():
    raise SystemExit(f"build_installer: torch {torch.__version__} is a CUDA build; the bundle "
                     "ships CPU torch (set LENSBENCH_TORCH or use a CPU-only environment)")
print(f"   torch {torch.__version__} (CPU build)")
EOF

echo "== PyInstaller (several minutes)"
start=$(date +%s)
"$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath "$DIST" --workpath build/pyinstaller build.spec
echo "   built $DIST/Lensbench in $(( $(date +%s) - start )) s"
BUNDLE=$DIST/Lensbench

if [ "$CHECK" = 1 ]; then
  echo "== self-test of the built app: no network, no Python on PATH, path with spaces, read-only"
  checkdir="$DIST/check me (read only)"
  rm -rf "$checkdir"; mkdir -p "$checkdir"
  mv "$BUNDLE" "$checkdir/Lensbench"
  home=$(mktemp -d)
  listing() { (cd "$checkdir/Lensbench" && find . -printf '%p %s %T@\n' | sort); }
  before=$(listing)
  chmod -R a-w "$checkdir/Lensbench"
  net=()
  if unshare -rn true 2>/dev/null; then net=(unshare -rn); fi
  set +e
  ( cd "$home" && "${net[@]}" env -i HOME="$home" PATH="$home/no-python-here" LANG=C.UTF-8 \
      "$checkdir/Lensbench/lensbench" --self-test )
  rc=$?
  set -e
  chmod -R u+w "$checkdir/Lensbench"
  after=$(listing)
  mv "$checkdir/Lensbench" "$BUNDLE"; rmdir "$checkdir"
  if [ -n "$(find "$home" -mindepth 1 -print -quit)" ]; then
    echo "   note: the self-test left files in its HOME:"; find "$home" -mindepth 1 | head
  fi
  rm -rf "$home"
  [ "$rc" = 0 ] || { echo "build_installer: the built app's self-test failed" >&2; exit 1; }
  [ "$before" = "$after" ] || { echo "build_installer: the app wrote inside its bundle" >&2;
    diff <(echo "$before") <(echo "$after") | head >&2; exit 1; }
  [ ${#net[@]} -gt 0 ] && echo "   (network namespace without interfaces: no network)"
fi

ARCHIVE_PATH=""
if [ "$ARCHIVE" = 1 ]; then
  echo "== archive"
  # xz: 192 MiB where gzip -9 gives 257 MiB; every Linux tar unpacks it (tar xf).
  ARCHIVE_PATH=$DIST/Lensbench-$VERSION-linux-x86_64.tar.xz
  tar -C "$DIST" --owner=0 --group=0 -cf - Lensbench | xz -6 -T0 > "$ARCHIVE_PATH"
fi

echo "== report"
"$PY" -m tools.installer.bundle_report "$BUNDLE" ${ARCHIVE_PATH:+--archive "$ARCHIVE_PATH"} \
  --json "$DIST/build-report.json"
