"""Shared fixtures. Qt runs offscreen; QSettings go to a temporary folder; nothing downloads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# The test models are tiny: one thread runs their small matrix products fastest, and several
# threads per process spin against each other when tests share the CPU (10x slower seen).
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from tests.model_fixtures import make_gpt2_folder  # noqa: E402

ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(scope="session", autouse=True)
def _isolated_settings(tmp_path_factory):
    """Keep QSettings and app data of tests out of the user's real profile."""
    home = tmp_path_factory.mktemp("xdg")
    os.environ["XDG_CONFIG_HOME"] = str(home / "config")
    os.environ["XDG_DATA_HOME"] = str(home / "data")
    yield


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    return make_gpt2_folder(tmp_path_factory.mktemp("tiny_gpt2"), n_layer=2, n_head=4,
                            n_embd=64, n_positions=64, seed=0)


@pytest.fixture(scope="session")
def tiny_host(tiny_gpt2_dir):
    from engine.host import load_host
    from engine.model_sources import ModelSpec

    return load_host(ModelSpec("folder", str(tiny_gpt2_dir), "cpu"))


@pytest.fixture(scope="session")
def bundled_host():
    from engine.host import load_host
    from engine.model_sources import BUNDLED_DIR, ModelSpec

    assert (BUNDLED_DIR / "config.json").is_file(), "the bundled model organism is missing"
    return load_host(ModelSpec("bundled", device="cpu"))


@pytest.fixture(scope="session")
def family_host(tmp_path_factory):
    """``family_host("llama")``: a loaded tiny random model of that family (tests/model_matrix.py),
    built once per test session."""
    from engine.host import load_host
    from engine.model_sources import ModelSpec
    from tests.model_fixtures import make_tokenizer
    from tests.model_matrix import make_family_folder

    hosts: dict = {}
    tokenizer = tmp_path_factory.mktemp("matrix_tokenizer")
    make_tokenizer(tokenizer)

    def get(family: str):
        if family not in hosts:
            folder = make_family_folder(family, tmp_path_factory.mktemp(family),
                                        tokenizer_dir=tokenizer)
            hosts[family] = load_host(ModelSpec("folder", str(folder), "cpu"))
        return hosts[family]

    return get


@pytest.fixture()
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(autouse=True)
def delete_closed_widgets_now():
    """After each test (and after its window fixture has joined the worker thread), delete the
    widgets pytest-qt closed and scheduled with ``deleteLater``, now: otherwise a test's whole
    window is destroyed whenever the next test's first event loop runs, in the middle of that
    test's model load, and a pyqtgraph item's Python override running mid-destruction can crash
    shiboken (one crash in the suite so far, on a reload in the induction panel's tests)."""
    yield
    if "PySide6.QtCore" in sys.modules:
        from PySide6.QtCore import QCoreApplication, QEvent

        if QCoreApplication.instance() is not None:
            QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


# -- leaving ----------------------------------------------------------------------------------------
_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus) -> None:
    _EXIT_STATUS.append(int(exitstatus))


def pytest_unconfigure(config) -> None:
    """After the summary is printed, leave as the app does (app.main.run): PySide's atexit pass
    deletes the Python-owned Qt objects left from hundreds of windows in no particular order, and
    a pyqtgraph item's Python override running mid-destruction can crash shiboken, turning a
    green run into exit code 139. Only when Qt was used, and only for the whole session."""
    if not _EXIT_STATUS or "PySide6.QtWidgets" not in sys.modules:
        return
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(_EXIT_STATUS[-1])
