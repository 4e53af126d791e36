"""Model picker: the bundled organism (default), a supported HF name, or a local folder."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
)

from engine.devices import available_devices
from engine.errors import ModelLoadError
from engine.model_sources import (
    BUNDLED_NAME,
    ModelSpec,
    check_spec,
    read_json,
    supported_model_names,
)


def remote_code_warning(folder: str) -> str:
    """A warning if the folder's config asks for trust_remote_code (which is never enabled).
    Runs as the user types: config.json is read only if it is a regular file of sane size (a
    symlink to /dev/zero or a pipe would hang the dialog)."""
    config = Path(folder) / "config.json"
    try:
        if not config.exists():
            return ""
        data = read_json(config)
    except (OSError, ValueError, ModelLoadError):
        return "config.json in this folder cannot be read."
    if "auto_map" in data:
        return ("This model ships its own Python code (it needs trust_remote_code). "
                "Lensbench never runs code from a model folder, so it cannot be loaded.")
    return ""


class ModelDialog(QDialog):
    def __init__(self, parent=None, current: ModelSpec | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Load model")
        self.setObjectName("modelDialog")
        self.resize(520, 480)
        self.bundled = QRadioButton(f"Bundled model organism ({BUNDLED_NAME}, works offline)")
        self.hf = QRadioButton("Hugging Face model supported by TransformerLens")
        self.folder = QRadioButton("Local model folder (config.json + *.safetensors + tokenizer)")
        group = QButtonGroup(self)
        for b in (self.bundled, self.hf, self.folder):
            group.addButton(b)
        self.bundled.setChecked(True)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter, or type any HF name (e.g. gpt2-small)")
        self.names = QListWidget()
        self._all_names = supported_model_names()
        self.names.addItems(self._all_names)
        self.names.setToolTip("Models load from the Hugging Face cache; if not cached and you are "
                              "online they are downloaded once, with a progress bar.")
        self.folder_edit = QLineEdit()
        browse = QPushButton("Browse…")
        self.warning = QLabel()
        self.warning.setObjectName("remoteCodeWarning")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #b00020;")
        self.device = QComboBox()
        self.device.addItems(["auto"] + available_devices())
        self.device.setToolTip("auto picks CUDA, then Apple MPS, then the CPU")
        self.dtype = QComboBox()
        self.dtype.addItems(["float32", "bfloat16", "float16"])
        self.dtype.setToolTip("float16 needs a GPU; bfloat16 halves memory at some precision cost")
        self.n_devices = QSpinBox()
        n_gpus = sum(d.startswith("cuda:") for d in available_devices())
        self.n_devices.setRange(1, max(1, n_gpus))
        self.n_devices.setEnabled(n_gpus > 1)
        self.n_devices.setToolTip("Split a model too large for one GPU across several "
                                  "(TransformerLens's n_devices placement). Needs 2+ CUDA GPUs.")
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Device", self.device)
        form.addRow("Precision", self.dtype)
        form.addRow("GPUs", self.n_devices)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Load")
        lay = QVBoxLayout(self)
        lay.addWidget(self.bundled)
        lay.addWidget(self.hf)
        lay.addWidget(self.filter)
        lay.addWidget(self.names, 1)
        lay.addWidget(self.folder)
        lay.addLayout(folder_row)
        lay.addWidget(self.warning)
        lay.addLayout(form)
        lay.addWidget(buttons)
        self.filter.textChanged.connect(self._filter)
        self.filter.textEdited.connect(lambda _: self.hf.setChecked(True))
        self.names.currentTextChanged.connect(self._pick_name)
        browse.clicked.connect(self._browse)
        self.folder_edit.textChanged.connect(self._folder_changed)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        if current is not None:
            self._apply(current)

    def _apply(self, spec: ModelSpec) -> None:
        {"bundled": self.bundled, "hf": self.hf, "folder": self.folder}[spec.source].setChecked(True)
        if spec.source == "hf":
            self.filter.setText(spec.name)
        elif spec.source == "folder":
            self.folder_edit.setText(spec.name)
        self.device.setCurrentText(spec.device)
        self.dtype.setCurrentText(spec.dtype)

    def _filter(self, text: str) -> None:
        """Show names containing the text, best matches (exact, then prefix) first."""
        needle = text.strip().lower()
        names = [n for n in self._all_names if needle in n.lower()] if needle else self._all_names
        names = sorted(names, key=lambda n: (n.lower() != needle,
                                             not n.lower().startswith(needle),
                                             not n.lower().split("/")[-1].startswith(needle),
                                             len(n), n.lower()))
        self.names.blockSignals(True)
        self.names.clear()
        self.names.addItems(names)
        self.names.blockSignals(False)

    def _pick_name(self, name: str) -> None:
        if name:
            self.hf.setChecked(True)
            self.filter.blockSignals(True)
            self.filter.setText(name)
            self.filter.blockSignals(False)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder")
        if folder:
            self.folder_edit.setText(folder)

    def _folder_changed(self, text: str) -> None:
        self.folder.setChecked(True)
        self.warning.setText(remote_code_warning(text) if text else "")

    def accept(self) -> None:
        """Load only a spec that can be loaded: a pickle-only folder, an unknown name or an
        uncached one while offline is refused here, and the dialog stays open to fix it."""
        try:
            check_spec(self.spec())
        except ModelLoadError as exc:
            self.warning.setText(f"{exc.message} {exc.hint}".strip())
            return
        super().accept()

    def spec(self) -> ModelSpec:
        device, dtype, n = self.device.currentText(), self.dtype.currentText(), \
            self.n_devices.value()
        if self.hf.isChecked():
            return ModelSpec("hf", self.filter.text().strip(), device, dtype, n)
        if self.folder.isChecked():
            return ModelSpec("folder", self.folder_edit.text().strip(), device, dtype, n)
        return ModelSpec("bundled", BUNDLED_NAME, device, dtype, n)


