"""Render the Attention panel on the bundled model and save the README screenshot.

    QT_QPA_PLATFORM=offscreen python -m tools.shots.attention [--model FOLDER] [--out DIR]

Runs a repeated sentence in the real main window, focuses the head with the strongest induction
stripe (attention from a repeated token to the token after its previous occurrence), hides the BOS
column, and saves docs/images/attention.png (the panel) and attention_window.png (whole window).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tools.shots.common import open_window, shot_parser, show_dock, wait

PROMPT = ("The king saw a blue river near the old stone bridge and a green lamp. "
          "The king saw a blue river near the old stone bridge and a green lamp.")



def induction_scores(patterns, token_ids):
    """Mean attention from each repeated token to the token after its previous occurrence."""
    import numpy as np

    ids = list(token_ids)
    pairs = []
    for q in range(1, len(ids)):
        prev = [p for p in range(1, q) if ids[p] == ids[q]]
        if prev and prev[-1] + 1 < q:
            pairs.append((q, prev[-1] + 1))
    if not pairs:
        return np.zeros(patterns.shape[:2])
    qs, ks = np.array(pairs).T
    return patterns[:, :, qs, ks].mean(-1)


def main(argv: list[str] | None = None) -> int:
    parser = shot_parser(__doc__)
    parser.add_argument("--prompt", default=PROMPT)
    args = parser.parse_args(argv)
    import numpy as np
    app, win = open_window(args.model, 1366, 768)
    if win is None:
        return 1
    binding, dock = show_dock(win, "attentionDock", 720)
    panel = binding.widget
    win.prompt_editor.edit.setPlainText(args.prompt)
    win.prompt_editor.run_button.click()
    wait(app, lambda: panel.result() is not None and not win.controller.busy)
    if panel.message.isVisible():
        print("panel says:", panel.message.text())
    item = panel.item()
    scores = induction_scores(item.patterns, item.token_ids)
    layer, head = np.unravel_index(int(np.argmax(scores)), scores.shape)
    layer = panel.result().layers[int(layer)]
    print(f"{info_line(win.controller.model_info)}\nstrongest induction head: L{layer} H{head} "
          f"(mean attention to the token after the previous occurrence: "
          f"{scores.max():.2f})")
    panel.bos_check.setChecked(True)
    win.controller.selection.set_head(int(layer), int(head))
    panel.set_position(item.n_tokens - 1)
    app.processEvents()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dock.grab().save(str(out / "attention.png"))
    win.grab().save(str(out / "attention_window.png"))
    print(f"saved {out / 'attention.png'} and {out / 'attention_window.png'}")
    win.close()
    return 0


def info_line(info) -> str:
    return info.summary() if hasattr(info, "summary") else str(info)


if __name__ == "__main__":
    sys.exit(main())
