"""What the bundle keeps and drops (bundle_policy), the placeholder for packages left out, and the
ELF reader the glibc report uses: checked without building."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools.installer import bundle_policy
from tools.installer.bundle_report import build_report, elf_version_needs, version_key

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(shutil.__file__).parent  # any folder; paths below are bundle destinations


@pytest.mark.parametrize("dest, kept", [
    ("torch/lib/libtorch_cpu.so", True),
    ("torch/lib/libgomp.so.1", True),  # torch's own OpenMP, not the host's
    ("torch/bin/torch_shm_manager", True),  # import torch needs it
    ("torch/bin/test_api", False),
    ("torch/bin/protoc-3.13.0.0", False),
    ("torch/test/test_jit", False),
    ("torch/include/ATen/ATen.h", False),
    ("torch/lib/libtorchbind_test.so", False),
    ("libcudart.so.12", False),
    ("libcublasLt.so.12", False),
    ("libnvrtc.so.12", False),
    ("libgtk-3.so.0", False),
    ("libcairo.so.2", False),
    ("libpango-1.0.so.0", False),
    ("libstdc++.so.6", False),
    ("libgcc_s.so.1", False),
    ("libglib-2.0.so.0", False),
    ("libfontconfig.so.1", False),
    ("libX11.so.6", False),
    ("libicuuc.so.72", False),  # the host's ICU; Qt ships its own .73
    ("PySide6/Qt/lib/libicuuc.so.73", True),
    ("libxcb-cursor.so.0", True),  # often missing on desktops: bundled
    ("libxcb-icccm.so.4", True),
    ("libxkbcommon-x11.so.0", True),
    ("libffi.so.8", True),
    ("libpython3.11.so.1.0", True),
    ("PySide6/Qt/plugins/platforms/libqxcb.so", True),
    ("PySide6/Qt/plugins/platforms/libqoffscreen.so", True),
    ("PySide6/Qt/plugins/platforms/libqwayland.so", False),
    ("PySide6/Qt/plugins/platformthemes/libqgtk3.so", False),
    ("PySide6/Qt/plugins/platformthemes/libqxdgdesktopportal.so", True),
    ("PySide6/Qt/plugins/imageformats/libqsvg.so", True),
    ("PySide6/Qt/translations/qtbase_de.qm", False),
    ("resources/models/lensbench-organism/model.safetensors", True),
])
def test_keep_and_drop(dest, kept):
    assert bundle_policy.keep((dest, str(SITE / "x"), "BINARY")) is kept


def test_excluded_modules_include_dev_tools_and_absent_packages():
    for name in ("pytest", "wandb", "tkinter", "matplotlib", "torchvision", "triton"):
        assert name in bundle_policy.EXCLUDED_MODULES
    assert set(bundle_policy.ABSENT_PACKAGES) == {"datasets", "pandas", "pyarrow"}


def test_transformer_lens_runs_with_placeholders_for_absent_packages(tmp_path):
    """In a process where datasets/pandas/pyarrow cannot be imported (as in the bundle), the
    runtime hook lets transformer_lens import, the engine load the organism and run a prompt;
    other importers still get ModuleNotFoundError; using a placeholder explains itself."""
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        sys.path.insert(0, {str(ROOT)!r})
        ABSENT = ("datasets", "pandas", "pyarrow")

        class Hide(importlib.abc.MetaPathFinder):  # as if the packages were not installed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ABSENT:
                    for finder in sys.meta_path:
                        if type(finder).__name__ == "_AbsentFinder":
                            spec = finder.find_spec(name, path, target)
                            if spec is not None:
                                return spec
                    raise ModuleNotFoundError(name)
                return None

        sys.meta_path.insert(0, Hide())
        import runpy
        runpy.run_path({str(ROOT / "tools" / "installer" / "rthook_absent_packages.py")!r})
        import transformer_lens, transformer_lens.patching
        assert getattr(sys.modules["pandas"], "__lensbench_absent__", False)
        from engine.host import load_host
        from engine.model_sources import ModelSpec
        from engine.prompt import PromptRequest, run_prompt
        from engine.jobs import Context
        host = load_host(ModelSpec("bundled", device="cpu"))
        r = run_prompt(host, PromptRequest("The Eiffel Tower is in"), Context())
        assert r.top_tokens[-1][0] == " Paris", r.top_tokens[-1]
        try:
            sys.modules["datasets"].load_dataset("x")
        except ImportError as exc:
            assert "not included in the Lensbench app" in str(exc)
        else:
            raise AssertionError("a placeholder must not work")
        sys.modules.pop("pyarrow", None)
        try:
            import pyarrow  # noqa: F401  (this module is not transformer_lens)
        except ModuleNotFoundError:
            print("ok")
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs binutils' objdump")
def test_elf_version_needs_match_objdump():
    import PySide6

    libs = [Path(PySide6.__file__).parent / "Qt" / "lib" / "libQt6Core.so.6",
            Path(sys.executable).resolve()]
    for lib in libs:
        if not lib.is_file() or lib.read_bytes()[:4] != b"\x7fELF":
            continue
        ours = elf_version_needs(lib)
        text = subprocess.run(["objdump", "-p", str(lib)], capture_output=True,
                              text=True).stdout.split("Version References:")[1]
        theirs: dict[str, set[str]] = {}
        current = None
        for line in text.splitlines():
            m = re.match(r"\s+required from (\S+):", line)
            if m:
                current = theirs.setdefault(m.group(1), set())
            m = re.match(r"\s+0x[0-9a-f]+ 0x[0-9a-f]+ \d+ (\S+)", line)
            if m and current is not None:
                current.add(m.group(1))
        assert ours == theirs, lib


def test_report_on_a_folder(tmp_path):
    import PySide6

    (tmp_path / "torch" / "bin").mkdir(parents=True)
    (tmp_path / "torch" / "bin" / "test_api").write_bytes(b"x")
    shutil.copy(Path(PySide6.__file__).parent / "Qt" / "lib" / "libQt6Core.so.6", tmp_path)
    report = build_report(tmp_path)
    assert report.files == 2 and report.elf_files == 1
    assert report.max_glibc.startswith("GLIBC_2.") and report.glibc_files == ["libQt6Core.so.6"]
    assert version_key(report.max_glibc) >= (2, 17)
    assert report.forbidden == ["torch/bin/test_api"]
