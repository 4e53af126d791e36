"""Drive the Features panel in the real window on the tiny GPT-2: open an SAE, build dashboards,
browse and search, the features at a token, attribution, interventions, the patch plan, training
with live curves and Cancel, bad folders, and the session state."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QFileDialog

from app.dock_scroll import PanelScrollArea
from engine.jobs import Context
from engine.sae_io import get_sae
from engine.sae_prompt import PromptFeaturesRequest, run_prompt_features
from tests.app.conftest import run_prompt_and_wait
from tests.engine.test_sae import random_weights, saelens6_cfg, write_saelens_folder
from tests.model_fixtures import CORPUS

IOI = "When John and Mary went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def sae_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("feat") / "tiny-res1"
    w = random_weights(64, 160, 11)
    w["b_enc"] = w["b_enc"] - 0.15
    write_saelens_folder(folder, saelens6_cfg(64, 160, "blocks.1.hook_resid_pre"), w)
    return folder


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = random.Random(2)
    words = " ".join(CORPUS).split()
    path = tmp_path_factory.mktemp("featcorpus") / "text.txt"
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 25)))
                              for _ in range(4000)))
    return path


def binding_of(window):
    return next(b for b in window.bindings if b.object_name == "featuresDock")


def wait_idle(qtbot, window, timeout=120_000):
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=timeout)


def click(qtbot, widget):
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton)


def open_sae(qtbot, window, folder, monkeypatch):
    """Click "Open SAE folder…" and pick ``folder`` in the (patched) dialog."""
    b = binding_of(window)
    window.docks["featuresDock"].raise_()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
    click(qtbot, b.widget.open_button)
    wait_idle(qtbot, window)
    return b.widget


def build_dashboards(qtbot, window, panel, text_file, n_tokens=6000):
    panel.train.source_path.setText(str(text_file))
    panel.corpus_combo.setCurrentIndex(panel.corpus_combo.findData("file"))
    panel.dash_tokens.setValue(n_tokens)
    with qtbot.waitSignal(window.controller.job_done, timeout=120_000,
                          check_params_cb=lambda ch: ch == "features.dash"):
        click(qtbot, panel.build_button)
    assert panel.stats is not None, panel.dash_status.text()


def click_row(qtbot, table, row):
    rect = table.visualRect(table.model().index(row, 0))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def test_open_build_browse_sort_search(qtbot, window, sae_folder, text_file, monkeypatch,
                                       artifacts_dir):
    panel = open_sae(qtbot, window, sae_folder, monkeypatch)
    assert "blocks.1.hook_resid_pre" in panel.description.text()
    assert panel.list.model.rowCount() == 160 and "160 features" in panel.list.count_label.text()
    assert "Not built yet: choose a text file" in panel.dash_status.text()
    build_dashboards(qtbot, window, panel, text_file)
    stats = panel.stats
    assert f"{stats.n_tokens:,} tokens" in panel.dash_status.text()
    # sort by density (click the header twice: descending)
    header = panel.list.table.horizontalHeader()
    at = QPoint(header.sectionViewportPosition(1) + 5, header.height() // 2)
    for _ in range(2):
        qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=at)
    shown = [int(panel.list.proxy.index(r, 0).data()) for r in range(5)]
    dens = [float(stats.density[f]) for f in shown]
    assert dens == sorted(dens, reverse=True) and dens[0] == pytest.approx(stats.density.max())
    # click the top row: its dashboard
    click_row(qtbot, panel.list.table, 0)
    f = shown[0]
    assert panel.dashboard.feature == f
    assert f"Feature {f}" in panel.dashboard.header.text()
    assert f"{float(stats.density[f]):.3%}" in panel.dashboard.header.text()
    html = panel.dashboard.contexts.toHtml()
    assert "underline" in html and f"{float(stats.top_acts[f, 0]):.2f}" in html
    # search by number, then by token text
    qtbot.keyClicks(panel.list.search, "17")
    assert panel.list.proxy.rowCount() == 1 and panel.list.proxy.index(0, 0).data() == "17"
    panel.list.search.clear()
    token = panel.info.vocab[int(panel.info.logits.top_ids[5][0])].strip()
    qtbot.keyClicks(panel.list.search, token)
    assert 1 <= panel.list.proxy.rowCount() < 160
    assert panel.list.row_of(5) >= 0
    panel.list.search.clear()
    window.resize(1366, 768)
    panel.grab().save(str(artifacts_dir / "features_browse.png"))


def test_prompt_activations_and_features_at_a_selected_token(qtbot, window, sae_folder,
                                                             monkeypatch, tiny_host):
    panel = open_sae(qtbot, window, sae_folder, monkeypatch)
    run_prompt_and_wait(qtbot, window, IOI)
    pf = panel.prompt_features
    assert pf is not None and pf.prompt == IOI
    want = run_prompt_features(tiny_host, PromptFeaturesRequest(IOI, str(sae_folder)), Context())
    np.testing.assert_allclose(pf.acts, want.acts, atol=1e-5)
    # click a token in the Predictions panel's strip: the features there are listed here
    preds = next(b for b in window.bindings if b.object_name == "predictionsDock").widget
    item = preds.strip.item(4)
    qtbot.mouseClick(preds.strip.viewport(), Qt.MouseButton.LeftButton,
                     pos=preds.strip.visualItemRect(item).center())
    assert window.controller.selection.position == 4
    assert panel.at_token_label.text().startswith("At pos 4")
    listed = [int(panel.at_token.item(i).data(Qt.ItemDataRole.UserRole))
              for i in range(panel.at_token.count())]
    assert listed == [f for f, _ in want.top_at(4, 12)]
    # clicking a listed feature shows it, its prompt strip coloured by its activations
    qtbot.mouseClick(panel.at_token.viewport(), Qt.MouseButton.LeftButton,
                     pos=panel.at_token.visualItemRect(panel.at_token.item(0)).center())
    assert panel.dashboard.feature == listed[0]
    tip = panel.dashboard.strip.item(4).toolTip()
    assert f"{float(want.acts[4, listed[0]]):.3g}" in tip


def test_attribution_tab_adds_up_to_the_dla(qtbot, window, sae_folder, monkeypatch):
    panel = open_sae(qtbot, window, sae_folder, monkeypatch)
    run_prompt_and_wait(qtbot, window, IOI)
    view = panel.attribution
    panel.tabs.setCurrentWidget(view)
    qtbot.keyClicks(view.answer_edit, " Mary")
    qtbot.keyClicks(view.cf_edit, " John")
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "features.attr"):
        click(qtbot, view.run_button)
    r = view.result
    assert r is not None and not view.message.isVisible()
    p = r.position
    total = r.effects[:, p].sum() + r.rest[p] + r.bias[p] + r.error[p]
    assert total == pytest.approx(float(r.component[p]), abs=1e-3)
    assert f"{float(r.component[p]):+.3f}" in view.summary.text()
    assert view.bars.labels[0] == f"F{int(r.features[0])}"  # the largest first (on top)
    # a multi-token answer: a message next to the inputs, the result stays
    view.answer_edit.setText(" Marybob")
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "features.attr"):
        click(qtbot, view.run_button)
    assert view.message.isVisible() and "tokens" in view.message.text()
    assert view.result is r


def test_interventions_from_the_dashboard(qtbot, window, sae_folder, monkeypatch, tiny_host):
    panel = open_sae(qtbot, window, sae_folder, monkeypatch)
    run_prompt_and_wait(qtbot, window, IOI)
    feature = panel.prompt_features.top_at(len(panel.prompt_features.str_tokens) - 1, 1)[0][0]
    panel.select_feature(feature)
    click(qtbot, panel.dashboard.intervene_button)
    view = panel.intervene
    assert panel.tabs.currentWidget() is view and view.table.rowCount() == 1
    view.table.cellWidget(0, 1).setCurrentIndex(2)  # steer
    view.table.cellWidget(0, 2).setValue(-5.0)
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "features.intervene"):
        click(qtbot, view.run_button)
    r = view.result
    sae = get_sae(tiny_host, sae_folder).sae
    model = tiny_host.model
    with torch.inference_mode():
        tokens = model.to_tokens(IOI)
        steered = model.run_with_hooks(tokens, fwd_hooks=[(
            "blocks.1.hook_resid_pre", lambda a, hook: a - 5.0 * sae.W_dec[feature])])
    probs = torch.softmax(steered[0, -1], -1).topk(len(r.after_probs)).values.numpy()
    np.testing.assert_allclose(r.after_probs, probs, atol=1e-5)
    assert view.predictions.item(0, 1).text().endswith(f"{float(probs[0]):.1%}")
    assert f"steer F{feature} -5" in view.summary.text()
    # "Add row" adds the feature selected in the Browse tab
    panel.select_feature(7)
    click(qtbot, view.add_button)
    assert view.table.rowCount() == 2 and view.table.cellWidget(1, 0).value() == 7
    click(qtbot, view.remove_button)  # nothing selected: the last row goes
    assert view.table.rowCount() == 1
    # unreadable positions: a message, no job
    view.table.item(0, 3).setText("3-x")
    click(qtbot, view.run_button)
    assert "cannot read positions" in view.message.text() and not window.controller.busy


def test_feature_goes_onto_the_patch_plan_and_runs(qtbot, window, sae_folder, monkeypatch):
    panel = open_sae(qtbot, window, sae_folder, monkeypatch)
    panel.select_feature(12)
    click(qtbot, panel.dashboard.plan_button)
    patching = next(b for b in window.bindings if b.object_name == "patchingDock").widget
    plan = patching.plan
    assert plan.items[-1]["component"] == "feature" and plan.items[-1]["index"] == 12
    assert plan.items[-1]["sae"] == str(sae_folder.resolve())
    assert plan.list.item(plan.list.count() - 1).text().startswith("F12 (tiny-res1, L1)")
    # the list's drag payload is the same item
    from widgets.component_palette import parse_mime

    dragged = parse_mime(panel.list.plan_mime([12]))
    assert dragged[0]["sae"] == plan.items[-1]["sae"] and dragged[0]["index"] == 12
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching.plan"):
        click(qtbot, plan.run_button)
    assert plan.result is not None and plan.result.labels[-1].startswith("F12")
    assert np.isfinite(plan.result.values).all()


def test_bad_folders_say_why_and_keep_the_app_working(qtbot, window, tmp_path, monkeypatch,
                                                      sae_folder):
    wide = tmp_path / "gpt2-res"
    write_saelens_folder(wide, saelens6_cfg(768, 32, "blocks.1.hook_resid_pre"),
                         random_weights(768, 32))
    panel = open_sae(qtbot, window, wide, monkeypatch)
    assert panel.message.isVisible() and "d_in=768" in panel.message.text()
    assert panel.info is None  # nothing half-loaded
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "cfg.json").write_text(json.dumps(saelens6_cfg(64, 32, "blocks.1.hook_resid_pre")))
    torch.save(random_weights(64, 32), pickled / "sae_weights.pt")
    open_sae(qtbot, window, pickled, monkeypatch)
    assert "pickled" in panel.message.text()
    open_sae(qtbot, window, sae_folder, monkeypatch)  # a good one still loads
    assert panel.info is not None and not panel.message.isVisible()
    run_prompt_and_wait(qtbot, window, IOI)
    assert panel.prompt_features is not None


def has_curve(view) -> bool:
    xs = view.lines["mse"].getData()[0]
    return xs is not None and len(xs) > 0


def train_settings(view, text_file, out, tokens=12_000):
    view.layer.setValue(1)
    view.hook.setCurrentIndex(view.hook.findData("hook_resid_pre"))
    view.expansion.setValue(2.0)
    view.arch.setCurrentIndex(view.arch.findData("standard"))  # the tutorial's (TopK: engine tests)
    view.l1.setValue(1.0)
    view.tokens.setValue(tokens)
    view.batch.setValue(256)
    view.lr.setValue(3e-3)
    view.context.setValue(32)
    view.source.setCurrentIndex(view.source.findData("file"))
    view.source_path.setText(str(text_file))
    view.output.setText(str(out))


def test_training_runs_in_slices_with_live_curves_and_loads(qtbot, window, text_file, tmp_path,
                                                            artifacts_dir):
    b = binding_of(window)
    panel = b.widget
    window.docks["featuresDock"].raise_()
    view = panel.train
    panel.tabs.setCurrentWidget(view)
    assert view.width_label.text().startswith("= 512 features")  # 8 x d_model 64
    train_settings(view, text_file, tmp_path / "trained")
    assert view.width_label.text().startswith("= 128 features")
    click(qtbot, view.train_button)
    assert not view.train_button.isEnabled() and view.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: has_curve(view) or view.train_button.isEnabled(), timeout=60_000)
    assert has_curve(view), view.status.text()
    # the worker is shared, yet a prompt run completes while training goes on
    run_prompt_and_wait(qtbot, window, IOI)
    preds = next(x for x in window.bindings if x.object_name == "predictionsDock").widget
    assert preds.summary.text().startswith("14 tokens") or "tokens" in preds.summary.text()
    qtbot.waitUntil(lambda: view.load_button.isEnabled(), timeout=180_000)
    assert "explained variance" in view.status.text()
    xs, ys = view.lines["mse"].getData()
    assert len(xs) == 12_000 // 256 and ys[-1] < ys[0]
    window.resize(1366, 768)
    panel.grab().save(str(artifacts_dir / "features_train.png"))
    click(qtbot, view.load_button)
    wait_idle(qtbot, window)
    assert panel.info is not None and panel.info.folder == str((tmp_path / "trained").resolve())
    assert panel.list.model.rowCount() == 128


def test_training_cancel_and_bad_text(qtbot, window, text_file, tmp_path):
    panel = binding_of(window).widget
    view = panel.train
    panel.tabs.setCurrentWidget(view)
    train_settings(view, text_file, tmp_path / "never", tokens=150_000)
    click(qtbot, view.train_button)
    qtbot.waitUntil(lambda: has_curve(view) or view.train_button.isEnabled(), timeout=60_000)
    assert has_curve(view), view.status.text()
    click(qtbot, view.cancel_button)
    wait_idle(qtbot, window)
    assert "Cancelled" in view.status.text() and view.train_button.isEnabled()
    assert not (tmp_path / "never").exists()
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02" * 1000)
    view.source_path.setText(str(binary))
    click(qtbot, view.train_button)
    wait_idle(qtbot, window)
    assert "not a text file" in view.status.text() and view.train_button.isEnabled()
    view.source_path.setText(str(text_file))
    view.lr.setValue(500.0)
    view.tokens.setValue(12_000)
    click(qtbot, view.train_button)
    wait_idle(qtbot, window)
    assert "diverged" in view.status.text() and "learning rate" in view.status.text()


def test_session_state_round_trip(qtbot, window, sae_folder, monkeypatch):
    b = binding_of(window)
    panel = open_sae(qtbot, window, sae_folder, monkeypatch)
    run_prompt_and_wait(qtbot, window, IOI)
    panel.select_feature(33)
    panel.intervene.add_edit(33, "clamp", 2.5, "1, 3-4")
    panel.attribution.answer_edit.setText(" Mary")
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "features.intervene"):
        click(qtbot, panel.intervene.run_button)
    state = json.loads(json.dumps(b.session_state()))  # plain JSON
    assert state["sae"] == str(sae_folder.resolve()) and state["feature"] == 33
    assert state["interventions"] == [{"feature": 33, "mode": "clamp", "value": 2.5,
                                       "positions": [1, 3, 4]}]
    shown = panel.intervene.summary.text()
    # a fresh panel state, then restore
    panel.set_sae(None)
    panel.intervene.set_edits([])
    panel.intervene.clear_result()
    b.folder = ""
    b.restore_session_state(state)
    wait_idle(qtbot, window)
    assert panel.info is not None and panel.dashboard.feature == 33
    assert panel.intervene.edits() == state["interventions"]
    assert panel.intervene.summary.text() == shown
    assert panel.attribution.answer_edit.text() == " Mary"
    # hostile values are ignored, not fatal
    b.restore_session_state({"sae": 5, "interventions": [{"feature": "x"}], "train": [],
                             "intervention_result": {"before_tokens": [1]}, "tab": "no"})


def test_saved_session_file_restores_the_sae_and_feature(qtbot, window, sae_folder, monkeypatch,
                                                         tmp_path):
    from app.session_actions import open_path, save_to

    panel = open_sae(qtbot, window, sae_folder, monkeypatch)
    run_prompt_and_wait(qtbot, window, IOI)
    panel.select_feature(21)
    panel.train.tokens.setValue(123_000)
    path = str(tmp_path / "s.lensbench")
    assert save_to(window, path)
    b = binding_of(window)
    b.folder = ""
    panel.set_sae(None)
    panel.train.tokens.setValue(10_000)
    assert open_path(window, path)
    wait_idle(qtbot, window)
    assert panel.info is not None and panel.info.folder == str(sae_folder.resolve())
    assert panel.dashboard.feature == 21 and panel.train.tokens.value() == 123_000


def test_every_features_tab_fits_1366x768(qtbot, window, sae_folder, text_file, monkeypatch,
                                          artifacts_dir):
    """With an SAE, its dashboards, a prompt and results in every tab: no scrolling, no control
    clipped or squeezed, the tab's main view over half the panel's height."""
    from tests.app.test_laptop_fit import _clipped_plots, _clipping_problems

    window.resize(1366, 768)
    panel = open_sae(qtbot, window, sae_folder, monkeypatch)
    build_dashboards(qtbot, window, panel, text_file)
    run_prompt_and_wait(qtbot, window, IOI)
    panel.select_feature(3)
    panel.attribution.answer_edit.setText(" Mary")
    panel.intervene.add_edit(3, "steer", 2.0)
    for button in (panel.attribution.run_button, panel.intervene.run_button):
        click(qtbot, button)
        wait_idle(qtbot, window)
    dock = window.docks["featuresDock"]
    scroll = dock.findChild(PanelScrollArea)
    main_view = {0: lambda: panel.dashboard.contexts, 1: lambda: panel.attribution.heatmap,
                 2: lambda: panel.intervene.table, 3: lambda: panel.train.curves}
    for tab in range(panel.tabs.count()):
        panel.tabs.setCurrentIndex(tab)
        for _ in range(3):
            qtbot.wait(10)
        window.grab().save(str(artifacts_dir / f"fit_features_{tab}.png"))
        assert not scroll.horizontalScrollBar().isVisible(), f"tab {tab} scrolls sideways"
        assert not scroll.verticalScrollBar().isVisible(), f"tab {tab} scrolls vertically"
        problems = _clipping_problems(scroll, panel) + _clipped_plots(panel)
        assert not problems, f"tab {tab}: " + "; ".join(problems)
        view = main_view[tab]()
        assert view.height() >= 0.5 * panel.height(), (tab, view.height(), panel.height())
