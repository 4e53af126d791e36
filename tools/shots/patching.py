"""Render the Activation patching panel on the bundled model and save the README screenshot.

    QT_QPA_PLATFORM=offscreen python -m tools.shots.patching [--model FOLDER] [--out DIR]

Two IOI pairs (the organism is trained on indirect-object sentences), a head sweep (layer x head,
all positions) and a block sweep, a patch plan with the sweep's strongest head and an MLP output,
run together and alone. Saves docs/images/patching.png (and patching_block.png).
"""

from __future__ import annotations

from pathlib import Path

from tools.shots.common import open_window, shot_parser, show_dock, wait

PAIRS = [
    ("When John and Mary went to the store, John gave a drink to",
     "When John and Mary went to the store, Mary gave a drink to", " Mary", " John"),
    ("When Anna and David went to the park, Anna gave a ball to",
     "When Anna and David went to the park, David gave a ball to", " David", " Anna"),
]



def main(argv: list[str] | None = None) -> int:
    parser = shot_parser(__doc__)
    args = parser.parse_args(argv)
    import numpy as np
    app, win = open_window(args.model, 1366, 768)
    if win is None:
        return 1
    binding, dock = show_dock(win, "patchingDock", 720)
    panel = binding.widget
    for row, pair in enumerate(PAIRS):
        panel.set_pair(row, *pair)
    wait(app, lambda: not win.controller.busy)
    app.processEvents()
    wait(app, lambda: not win.controller.busy)
    if panel.message.isVisible():
        print("panel says:", panel.message.text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def sweep(kind: str):
        panel.sweep_combo.setCurrentIndex(panel.sweep_combo.findData(kind))
        panel.run_button.click()
        wait(app, lambda: panel.result is not None and panel.result.kind == kind
              and panel.result.complete and not win.controller.busy)
        return panel.result

    block = sweep("block")
    print("block sweep", block.values.shape, f"{block.seconds:.2f}s")
    app.processEvents()  # the row-label axis widened for its labels: lay out before the grab
    panel.grab().save(str(out / "patching_block.png"))
    heads = sweep("head_out")
    layer, head = np.unravel_index(int(np.nanargmax(heads.values)), heads.values.shape)
    print(f"head sweep {heads.seconds:.2f}s; strongest head L{layer}H{head} "
          f"{heads.values[layer, head]:.3f}")
    panel.plan.add_items([{"component": "z", "layer": int(layer), "index": int(head),
                           "positions": []},
                          {"component": "mlp_out", "layer": int(heads.values.shape[0] - 1),
                           "index": -1, "positions": []}])
    panel.plan.run_button.click()
    wait(app, lambda: panel.plan.result is not None and not win.controller.busy)
    print("plan", dict(zip(panel.plan.result.labels, panel.plan.result.values.round(3).tolist(),
                           strict=True)))
    app.processEvents()
    panel.grab().save(str(out / "patching.png"))
    print("saved", out / "patching.png")
    win.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
