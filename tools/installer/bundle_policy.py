"""What goes into the frozen bundle and what stays out; ``build.spec`` applies it.

Kept here, not in the spec, so tests can check the rules without a five-minute build.

- Python packages that are installed for development or that nothing reachable from the app
  uses are excluded by name (``EXCLUDED_MODULES``).
- ``ABSENT_PACKAGES`` are imported at module level by transformer_lens only for its dataset and
  evaluation helpers, which Lensbench never calls; they are left out (pyarrow alone is 170 MB) and
  ``rthook_absent_packages.py`` gives transformer_lens an importable placeholder instead.
- Files are dropped by their path inside the bundle (``DROPPED_PATHS``): torch's C++ test
  binaries (torch/bin keeps only torch_shm_manager, which ``import torch`` needs), headers and CMake files, Qt plugins the app does not use (GTK theme, Wayland, EGL
  devices, printing, network information) and Qt's translations (the UI is English).
- Shared libraries from the build host are dropped by name (``HOST_LIBRARIES_NOT_BUNDLED``): any
  CUDA library (the app bundles CPU torch), GUI toolkits Qt's xcb platform does not need
  (GTK, cairo, pango...), and libraries every desktop Linux has, newer on the build host than on
  older systems (libstdc++, libgcc_s, X11, fontconfig, freetype, glib, D-Bus). Bundling those
  would raise the glibc the bundle needs to the build host's (Debian 12: 2.36).
"""

from __future__ import annotations

import re

EXCLUDED_MODULES = [
    # development and test tools
    "pytest", "_pytest", "pluggy", "iniconfig", "hypothesis", "ruff", "py", "pytestqt",
    "IPython", "ipykernel", "jupyter", "jupyter_client", "notebook", "nbformat",
    "PyInstaller", "setuptools", "pip", "distutils", "lib2to3", "pydoc_data", "readline",
    "curses", "_curses",
    # GUI toolkits and plotting libraries other than Qt6/PySide6 + pyqtgraph
    "tkinter", "_tkinter", "matplotlib", "PyQt5", "PyQt6", "PySide2",
    # experiment tracking, vision, audio, compilers, other frameworks: never used by Lensbench
    "wandb", "tensorboard", "torchvision", "torchaudio", "triton", "onnx", "onnxruntime",
    "lit_nlp", "circuitsvis", "plotly", "sentry_sdk", "git", "tensorflow", "jax", "flax",
    "keras", "cv2", "PIL", "scipy", "sklearn", "bitsandbytes", "deepspeed", "torchao",
    "transformers_stream_generator", "sae_lens",
]

ABSENT_PACKAGES = ("datasets", "pandas", "pyarrow")

# Paths inside the bundle (forward slashes), matched from the start.
DROPPED_PATHS = (
    "torch/bin/FileStoreTest", "torch/bin/HashStoreTest", "torch/bin/TCPStoreTest",
    "torch/bin/protoc", "torch/bin/test_", "torch/bin/script_module", "torch/bin/upgrader",
    "torch/test/", "torch/include/", "torch/share/", "torch/lib/libshm_windows/",
    "torch/lib/libtorchbind_test.so", "torch/lib/libjitbackend_test.so",
    "torch/lib/libbackend_with_compiler.so", "torch/lib/libaoti_custom_ops.so",
    "torch/utils/benchmark/", "torch/_inductor/codegen/aoti_runtime/",
    "PySide6/Qt/translations/",
    "PySide6/Qt/plugins/platformthemes/libqgtk3",
    "PySide6/Qt/plugins/wayland", "PySide6/Qt/plugins/egldeviceintegrations/",
    "PySide6/Qt/plugins/generic/", "PySide6/Qt/plugins/networkinformation/",
    "PySide6/Qt/plugins/tls/", "PySide6/Qt/plugins/printsupport/",
    "PySide6/Qt/plugins/platforms/libqeglfs", "PySide6/Qt/plugins/platforms/libqlinuxfb",
    "PySide6/Qt/plugins/platforms/libqvnc", "PySide6/Qt/plugins/platforms/libqwayland",
    "PySide6/Qt/plugins/platforms/libqvkkhrdisplay",
    "PySide6/Qt/plugins/platforms/libqminimalegl",
    "PySide6/Qt/plugins/platforminputcontexts/libqtvirtualkeyboard",
    "PySide6/Qt/lib/libQt6Wayland", "PySide6/Qt/lib/libQt6EglFs",
    "PySide6/Qt/lib/libQt6WlShellIntegration",
)

_HOST_LIBRARY_PATTERNS = (
    # CUDA and NVIDIA: never needed by CPU torch; the driver's own libraries belong to the system
    r"libcuda", r"libcudart", r"libcublas", r"libcudnn", r"libcufft", r"libcurand",
    r"libcusparse", r"libcusolver", r"libnvrtc", r"libnvjitlink", r"libnvtoolsext", r"libnvtx",
    r"libnccl", r"libcupti", r"libnvvm", r"libnvperf", r"libpcsamplingutil", r"libnvidia",
    # GUI toolkits and their stack (Qt's GTK theme plugin pulls these in)
    r"libgtk-", r"libgdk-", r"libgdk_pixbuf", r"libcairo", r"libpango", r"libatk", r"libatspi",
    r"libepoxy", r"libharfbuzz", r"libfribidi", r"libthai", r"libdatrie", r"libpixman",
    r"libgraphite2", r"libxcomposite", r"libxcursor", r"libxdamage", r"libxi\.", r"libxinerama",
    r"libxrandr", r"libxrender", r"libxext", r"libxfixes", r"libwayland", r"libcolord",
    r"libcloudproviders", r"libtracker", r"librsvg", r"libjpeg", r"libtiff", r"libwebp",
    r"libdeflate", r"libjbig", r"liblerc", r"libsharpyuv",
    # every desktop Linux has these; the build host's copies need its newer glibc
    r"libstdc\+\+", r"libgcc_s", r"libx11", r"libxau", r"libxdmcp", r"libfontconfig",
    r"libfreetype", r"libpng16", r"libbrotli", r"libexpat", r"libglib-2", r"libgthread-2",
    r"libgobject-2", r"libgio-2", r"libgmodule-2", r"libpcre2", r"libdbus-1", r"libsystemd",
    r"libgcrypt", r"libgpg-error", r"libcap\.", r"liblz4", r"libzstd", r"libbsd", r"libmd\.",
    r"libselinux", r"libmount", r"libblkid", r"libuuid", r"libxkbcommon\.",
    r"libicu",  # ICU: Qt ships its own copy (libicu*.so.73)
    r"libgomp\.so",  # OpenMP: torch ships its own (torch/lib/libgomp.so.1)
)
_HOST_LIBRARY_RE = re.compile("|".join(_HOST_LIBRARY_PATTERNS), re.IGNORECASE)

# Folders inside the bundle whose libraries come from wheels (kept even if the name matches).
WHEEL_LIBRARY_FOLDERS = ("torch/", "PySide6/", "shiboken6/", "numpy", "sentencepiece",
                         "tokenizers/", "safetensors/")


# Libraries whose symbol tables (not needed to run; dynamic symbols stay) are stripped after the
# build: ~110 MB, 85 MB of it libtorch_cpu.so. Only files built by their projects' own
# toolchains: libraries repaired by auditwheel/patchelf (numpy.libs/, *.libs/) break when
# stripped ("ELF load command address/offset not page-aligned"), so nothing else is touched.
STRIP_PATTERNS = ("torch/lib/*.so*", "libpython3*.so*", "python3*/lib-dynload/*.so")


def strip_binaries(folder) -> int:
    """``strip --strip-unneeded`` the STRIP_PATTERNS files under ``folder``; bytes saved."""
    import shutil
    import subprocess
    from pathlib import Path

    tool = shutil.which("strip")
    if tool is None:
        return 0
    saved = 0
    for pattern in STRIP_PATTERNS:
        for path in Path(folder).glob(pattern):
            if path.is_symlink() or not path.is_file():
                continue
            before = path.stat().st_size
            if subprocess.run([tool, "--strip-unneeded", str(path)]).returncode == 0:
                saved += before - path.stat().st_size
    return saved


def source_modules(package: str = "torch") -> list[str]:
    """Modules of ``package`` that read their own source at import time: torch's config modules
    call ``install_config_module``, which parses the file for its comments, and functions declared
    with ``torch.jit._overload`` look up their source (a warning each when it is missing). They
    keep their .py file in the bundle where the package's other modules are bytecode only."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(list(spec.submodule_search_locations)[0])
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        if "testing" in rel.parts or rel.name == "__init__":
            continue
        try:
            text = path.read_text(encoding="utf-8", errors="ignore")
        except OSError:
            continue
        if "install_config_module(" in text or "_overload as overload" in text \
                or "@_overload\n" in text or "@torch.jit._overload\n" in text \
                or "@torch._jit_internal._overload_method" in text:
            out.append(".".join(rel.parts))
    return out


def collection_modes() -> dict[str, str]:
    """PyInstaller ``module_collection_mode``: torch as bytecode only (its hook asks for .py files
    too, for TorchScript, which Lensbench does not use: ~50 MB) except the modules above."""
    modes = {"torch": "pyz"}
    modes.update({name: "pyz+py" for name in source_modules("torch")})
    return modes


def _norm(dest: str) -> str:
    return dest.replace("\\", "/")


def is_dropped_path(dest: str) -> bool:
    """True for a file the bundle should not contain, by its path in the bundle."""
    d = _norm(dest)
    return d.startswith(DROPPED_PATHS) or "/__pycache__/" in d


def is_unwanted_host_library(dest: str) -> bool:
    """True for a shared library taken from the build host that the bundle must not carry."""
    d = _norm(dest)
    if d.startswith(WHEEL_LIBRARY_FOLDERS):
        return False
    name = d.rsplit("/", 1)[-1]
    return bool(_HOST_LIBRARY_RE.match(name))


def keep(entry) -> bool:
    """Filter for PyInstaller TOC entries ``(dest_name, src_name, typecode)``."""
    dest = entry[0]
    return not is_dropped_path(dest) and not is_unwanted_host_library(dest)


def filter_toc(toc):
    return [e for e in toc if keep(e)]
