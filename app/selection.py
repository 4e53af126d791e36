"""The shared selection that links panels: select a head anywhere and every panel follows."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal


class Selection(QObject):
    """Current prompt, position, layer and head. Setting an unchanged value emits nothing."""

    prompt_changed = Signal(str)
    position_changed = Signal(int)  # -1 means "last position"
    head_selected = Signal(int, int)  # layer, head (head -1: whole layer)
    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self._prompt = ""
        self._position = -1
        self._layer = 0
        self._head = 0

    @property
    def prompt(self) -> str:
        return self._prompt

    @property
    def position(self) -> int:
        return self._position

    @property
    def layer(self) -> int:
        return self._layer

    @property
    def head(self) -> int:
        return self._head

    def set_prompt(self, prompt: str) -> None:
        if prompt != self._prompt:
            self._prompt = prompt
            self.prompt_changed.emit(prompt)
            self.changed.emit()

    def set_position(self, position: int) -> None:
        if position != self._position:
            self._position = position
            self.position_changed.emit(position)
            self.changed.emit()

    def set_head(self, layer: int, head: int) -> None:
        if (layer, head) != (self._layer, self._head):
            self._layer, self._head = layer, head
            self.head_selected.emit(layer, head)
            self.changed.emit()

    def to_dict(self) -> dict:
        return {"prompt": self._prompt, "position": self._position, "layer": self._layer,
                "head": self._head}

    def load_dict(self, data: dict) -> None:
        self.set_prompt(str(data.get("prompt", "")))
        self.set_position(int(data.get("position", -1)))
        self.set_head(int(data.get("layer", 0)), int(data.get("head", 0)))
