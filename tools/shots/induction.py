"""Render the Induction-heads panel on the bundled model and save the README screenshots.

    QT_QPA_PLATFORM=offscreen python -m tools.shots.induction [--model FOLDER] [--out DIR]

In the real main window: scans every head on repeated random tokens (and a repeated sentence as
the prompt), marks the heads with induction score >= 0.5, selects the best one and shows it in the
attention panel on the repeated sequence, runs the ablation check, and saves docs/images/induction.png
(score maps), induction_ablation.png (loss and ablation) and induction_window.png (whole window).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tools.shots.common import open_window, shot_parser, show_dock, wait

PROMPT = ("When Mary and John went to the park, John gave a ball to Mary. "
          "When Mary and John went to the park, John gave a ball to")



def main() -> int:
    p = shot_parser(__doc__.splitlines()[0])
    p.add_argument("--seq-len", type=int, default=40)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threshold", type=float, default=0.5)
    args = p.parse_args()

    app, win = open_window(args.model, 1366, 768)
    if win is None:
        return 1
    binding, dock = show_dock(win, "inductionDock", 700)
    panel = binding.widget
    panel.seq_len.setValue(args.seq_len)
    panel.batch.setValue(args.batch)
    panel.pool.setCurrentIndex(panel.pool.findData("words"))  # readable in the attention panel
    win.prompt_editor.edit.setPlainText(PROMPT)
    win.prompt_editor.run_button.click()  # the visible panel scans with the prompt
    wait(app, lambda: binding.result is not None and not win.controller.busy)
    r = binding.result
    panel.threshold.setValue(round(args.threshold * 100))
    heads = panel.marked_heads()
    ind = r.repeated["induction"]
    print(f"{win.controller.model_info.summary()}\nscan: {r.seconds:.2f} s, {r.n_forward_passes} pass(es); "
          f"loss first copy {r.first_half_loss:.2f}, repeated copy {r.second_half_loss:.2f}")
    print("induction scores (layers x heads):")
    for layer, row in enumerate(ind):
        print(f"  L{layer}: " + " ".join(f"{v:.2f}" for v in row))
    print(f"heads >= {args.threshold}: {heads}")
    best = heads[0] if heads else tuple(int(v) for v in divmod(int(ind.argmax()), r.n_heads))
    binding.select_head(*best)
    binding.inspect()  # the repeated sequence joins the attention panel's prompts
    wait(app, lambda: not win.controller.busy)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    app.processEvents()
    dock.grab().save(str(out / "induction.png"))
    if heads:
        panel.tabs.setCurrentIndex(1)
        panel.ablate_button.click()
        wait(app, lambda: binding.ablation is not None and not win.controller.busy)
        ab = binding.ablation
        print(f"ablating {len(heads)} heads: repeated-half loss {ab.clean_halves[1]:.2f} -> "
              f"{ab.ablated_halves[1]:.2f} ({ab.ablated_rise:+.2f}); random controls "
              f"{ab.control_rise:+.2f} on average")
    else:
        print("no head reaches the threshold: no ablation shown")
        panel.tabs.setCurrentIndex(1)
    app.processEvents()
    dock.grab().save(str(out / "induction_ablation.png"))
    panel.tabs.setCurrentIndex(0)
    app.processEvents()
    win.grab().save(str(out / "induction_window.png"))
    print(f"saved {out / 'induction.png'}, induction_ablation.png, induction_window.png")
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
