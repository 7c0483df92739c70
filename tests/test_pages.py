"""Dashboard pages under Streamlit's AppTest: each renders, has its key widgets, and its main
action works on small data (the real ``digits`` set and its shipped model; the demo once).

Runs recorded for the Results/Runs/Compose pages are made directly in a temporary workspace
(the shipped model stands in for every model) so the tests need no training; one test starts a
real background unlearning job and cancels it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from unlearn_core.ui.state import ModelChoice  # noqa: E402

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 180


@pytest.fixture(scope="module")
def workspace_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("studio_home")
    previous = os.environ.get("UNLEARN_STUDIO_HOME")
    os.environ["UNLEARN_STUDIO_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("UNLEARN_STUDIO_HOME", None)
    else:
        os.environ["UNLEARN_STUDIO_HOME"] = previous


@pytest.fixture(scope="module")
def digits_runs(workspace_home):
    """Two finished unlearn runs on digits (forget class 3), with a retrain reference run."""
    from unlearn_core.assets import load_demo_model
    from unlearn_core.data.builtin import load_builtin
    from unlearn_core.data.criteria import ForgetCriteria, split_sets
    from unlearn_core.evaluate import evaluate_model
    from unlearn_core.models.weights import SPEC_KEY, state_hash
    from unlearn_core.runs.registry import Workspace, cli_command

    data = load_builtin("digits")
    model = load_demo_model(data)
    criteria = 'label == "3"'
    split = split_sets(data, ForgetCriteria.parse(criteria))
    block = evaluate_model(model, data, split)
    ws = Workspace()
    meta = {SPEC_KEY: json.dumps(model.spec.to_dict())}
    retrain = ws.create_run("retrain", status="running", dataset="digits", criteria_text=criteria, method="retrain")
    ws.save_weights(retrain.id, model.state_dict(), meta)
    ws.set_status(retrain.id, "done", metrics={"retrain": block})
    ids = []
    for method in ("psg", "finetune"):
        run = ws.create_run(
            "unlearn", status="running", dataset="digits", dataset_fingerprint=data.fingerprint(),
            base_model_hash=state_hash(model), criteria_text=criteria, method=method, parents=[retrain.id],
            retrain_run=retrain.id,
            command=cli_command(["unlearn", "--dataset", "digits", "--forget", criteria, "--method", method]))
        ws.save_weights(run.id, model.state_dict(), meta)
        ws.save_json(run.id, "split.json", {k: v.tolist() for k, v in vars(split).items()})
        ws.set_status(run.id, "done", metrics={
            "original": block, "unlearned": block, "retrain": block, "retrain_run": retrain.id,
            "distance_to_retrain": 0.0, "original_distance_to_retrain": 0.0, "collapsed": False,
            "seconds_unlearn": 1.0, "seconds_retrain": 10.0, "speedup": 10.0, "flip_rate": 0.5,
            "criteria_description": "training images of class '3'"})
        ids.append(run.id)
    return ids


@pytest.fixture(autouse=True)
def quick_stop_estimate(monkeypatch):
    """The Unlearn page's stop estimate trains three small proxy models (tens of seconds on 2
    cores); these tests are about the page, so a fixed estimate stands in. The estimate itself
    is tested in test_stop_target.py, and the real-browser test runs the real one on the page."""
    from unlearn_core.ui import stop_text

    monkeypatch.setattr(stop_text, "estimate", lambda model, data, split, seed=0, device="cpu", cache=None: {
        "value": 0.0, "estimator": "proxy_retrain", "original_forget_acc": 1.0, "keep_case": False,
        "explanation": "a stand-in estimate for page tests"})


def _app(page: str | None = None, **session) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in session.items():
        at.session_state[key.replace("__", ".")] = value
    if page is not None:
        at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


DIGITS = {"us__dataset": "digits", "us__dataset_label": "Handwritten digits", "us__model": ModelChoice("shipped")}


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_home_renders_and_loads_the_demo(workspace_home):
    from unlearn_core.data.builtin import BUILTIN_SETS

    at = _app()
    assert at.title[0].value == "Unlearning Studio"
    button = at.button(key="load_demo")
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["us.dataset"] == "oculoplastic"
    assert at.session_state["us.criteria"] == BUILTIN_SETS["oculoplastic"].demo_forget
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["us.model"] == ModelChoice("shipped")
    assert any("Demo loaded" in s.value for s in at.success)
    # the demo's forget set is ready on the next page
    at.switch_page("pages/2_forget_set.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert int(_metric(at, "Forget (training)").replace(",", "")) > 10
    # every built-in set has its one-click demo
    at.switch_page("app.py").run()
    assert at.selectbox(key="home_demo_set").options == [BUILTIN_SETS[n].title for n in BUILTIN_SETS]
    at.selectbox(key="home_demo_set").set_value("digits").run()
    at.button(key="load_demo").click().run()
    assert at.session_state["us.dataset"] == "digits"
    assert at.session_state["us.criteria"] == BUILTIN_SETS["digits"].demo_forget
    assert any("Demo loaded" in s.value for s in at.success)


def test_data_model_page_picks_a_builtin_set(workspace_home):
    at = _app("pages/1_data_model.py")
    assert at.radio(key="dm_source").value == "builtin"
    at.selectbox(key="dm_builtin").set_value("digits").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["us.dataset"] == "digits"
    assert at.session_state["us.model"] == ModelChoice("shipped")  # the shipped model is selected with it
    assert _metric(at, "Training images") == "1,438"
    assert float(_metric(at, "Test accuracy").rstrip("%")) > 80
    assert len(at.get("plotly_chart")) >= 4  # classes, metadata, samples, confusion matrix
    assert at.radio(key="dm_model_source").value == "shipped"


def test_forget_set_counts_follow_the_controls_and_the_text(workspace_home):
    at = _app("pages/2_forget_set.py", **DIGITS)
    assert _metric(at, "Forget (training)") == "0"
    assert at.multiselect(key="fs_classes").value == []
    assert at.slider(key="fs_range_ink") is not None
    assert at.toggle(key="fs_fraction_on").value is False
    assert at.text_input(key="fs_text").value == ""
    slider = at.slider(key="fs_range_width_px")
    slider.set_value((20, int(slider.max))).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["us.criteria"] == "width_px >= 20"
    forget = int(_metric(at, "Forget (training)").replace(",", ""))
    assert 0 < forget < 1438
    assert int(_metric(at, "Remain (training)").replace(",", "")) == 1438 - forget
    assert len(at.get("plotly_chart")) >= 2  # histogram with the range shaded, thumbnails
    assert any("unlearn_core unlearn" in c.value for c in at.code)

    at.text_input(key="fs_text").set_value('label == "3"')
    at.button(key="fs_apply_text").click().run()
    assert at.session_state["us.criteria"] == 'label == "3"'
    assert at.multiselect(key="fs_classes").value == ["3"]
    assert any("entirely" in w.value for w in at.warning)  # a whole class is selected

    at.text_input(key="fs_text").set_value("colour == 3")
    at.button(key="fs_apply_text").click().run()
    assert at.error and "colour" in at.error[0].value
    assert 'the counts below still show `label == "3"`' in at.error[0].value
    assert at.session_state["us.criteria"] == 'label == "3"'  # a bad text changes nothing
    # The example and the names to type are this data set's own.
    assert at.text_input(key="fs_text").placeholder.startswith("e.g. ink >= ")  # digits' first column
    assert any("Names to type: label, " in c.value and "width_px" in c.value for c in at.caption)
    # An empty set says which condition emptied it.
    at.text_input(key="fs_text").set_value('label == "3" and width_px >= 1000')
    at.button(key="fs_apply_text").click().run()
    assert any("each condition matches alone" in w.value and 'label == "3": 146' in w.value for w in at.warning), \
        [w.value for w in at.warning]


def test_unlearn_page_starts_and_cancels_a_background_run(workspace_home):
    from unlearn_core.runs import jobs
    from unlearn_core.runs.registry import Workspace

    at = _app("pages/3_unlearn.py", us__criteria='label == "3"', **DIGITS)
    assert at.selectbox(key="ul_method").value == "psg"
    assert at.selectbox(key="ul_device").value == "auto"
    assert at.number_input(key="ul_set_psg_eps").value == pytest.approx(0.1)
    at.selectbox(key="ul_method").set_value("finetune").run()
    at.number_input(key="ul_set_finetune_epochs").set_value(1)
    at.checkbox(key="ul_retrain").uncheck().run()
    command = at.code[0].value
    assert "--method finetune" in command and "--set epochs=1" in command and "--retrain" not in command
    at.button(key="ul_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    run_id = at.session_state["us.unlearn_run_id"]
    ws = Workspace()
    assert ws.get(run_id).status in ("queued", "running")
    jobs.cancel(ws, run_id, grace=1.0)
    assert ws.get(run_id).status == "cancelled"
    at.run()
    assert any("cancelled" in w.value for w in at.warning)
    # What is shown is what will run: the settings survive the progress panel (issue 14, item 2).
    assert at.selectbox(key="ul_method").value == "finetune"
    assert at.number_input(key="ul_set_finetune_epochs").value == 1
    assert not at.checkbox(key="ul_retrain").value
    assert "--method finetune" in at.code[0].value


def test_results_page_shows_scores_and_decision_regions(digits_runs):
    at = _app("pages/4_results.py", us__run_id=digits_runs[0], **DIGITS)
    assert at.selectbox(key="rs_run").value == digits_runs[0]
    assert _metric(at, "Distance to retrain") == "0.000"
    assert any(m.value.startswith("Test accuracy: original") and "retrain reference" in m.value for m in at.markdown)
    assert len(at.dataframe) >= 1
    assert len(at.get("plotly_chart")) >= 3  # per-class bars, loss histograms, t-SNE panels
    assert not at.error, [e.value for e in at.error]
    # the privacy verdict in plain words (the stand-in models are identical: no better than retrain)
    assert any("no better than with the retrained model ✓" in s.value for s in at.success)
    assert _metric(at, "ε: how far the forget losses give the unlearned model away") == "0.00"
    assert any(e.label == "Membership-attack scores in detail" for e in at.expander)
    assert any(h.value == "Where the forgetting lives" for h in at.subheader)
    from unlearn_core.runs.registry import Workspace

    # The panels and the per-block comparison are kept with the run, so its HTML report shows them too.
    assert Workspace().artifact_path(digits_runs[0], "embedding.npz").is_file()
    assert Workspace().artifact_path(digits_runs[0], "block_similarity.json").is_file()
    # The decision-region legend names every class and both markers (issue 15, item 2).
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    tsne = next(f for f in figures if any(t.get("name") == "forget image" for t in f["data"]))
    legend = {t.get("name") for t in tsne["data"] if t.get("showlegend") is not False and t.get("type") != "heatmap"}
    assert {str(d) for d in range(10)} | {"forget image", "kept image"} <= legend, legend


def test_results_page_reads_the_losses_saved_with_the_run(digits_runs, monkeypatch):
    """The per-image losses are computed once per run and kept in its folder: a restarted app
    (process caches emptied) shows the same loss chart and ε without running the models again."""
    from unlearn_core.runs.registry import Workspace
    from unlearn_core.ui import cache

    first = _app("pages/4_results.py", us__run_id=digits_runs[0], **DIGITS)
    assert Workspace().artifact_path(digits_runs[0], cache.LOSSES_ARTIFACT).is_file()
    charts = [c.proto.spec for c in first.get("plotly_chart")]
    epsilon = _metric(first, "ε: how far the forget losses give the unlearned model away")
    cache.run_losses.clear()
    cache.run_loss_figure.clear()

    def no_forwards(run_id):
        raise AssertionError("the saved losses should have been read")

    monkeypatch.setattr(cache, "_compute_losses", no_forwards)
    again = _app("pages/4_results.py", us__run_id=digits_runs[0], **DIGITS)
    assert _metric(again, "ε: how far the forget losses give the unlearned model away") == epsilon
    assert [c.proto.spec for c in again.get("plotly_chart")] == charts


def test_runs_page_lists_compares_and_deletes(digits_runs):
    from unlearn_core.runs.registry import Workspace

    at = _app("pages/6_runs.py", **DIGITS)
    assert at.selectbox(key="rn_run").value in [r.id for r in Workspace().list_runs()]
    table = at.dataframe[0].value
    assert set(table["data set"]) == {"digits"}
    assert not table[["method", "data set", "forget criteria"]].isna().any().any()
    assert at.text_input(key="rn_search") is not None
    labels = [b.label for b in at.get("download_button")]
    assert {"Model (.safetensors)", "Scores (.csv)", "Everything recorded (.json)", "Report (.html)"} <= set(labels)
    report = next(b for b in at.get("download_button") if b.label == "Report (.html)")
    assert report.proto.deferred_file_id  # rendered on click, not on every draw of the page (about a second)
    extra = Workspace().create_run("train", status="running", dataset="digits")
    Workspace().set_status(extra.id, "failed", error="boom")
    at.run()
    at.selectbox(key="rn_run").set_value(extra.id).run()
    assert any("boom" in e.value for e in at.error)
    at.button(key="rn_delete").click().run()
    assert not Workspace().exists(extra.id)


def test_compose_page_builds_the_command(digits_runs):
    at = _app("pages/5_compose.py", us__run_id=digits_runs[0], **DIGITS)
    assert set(at.multiselect(key="cp_runs").value) == set(digits_runs)
    assert at.radio(key="cp_strategy").value == "interpolate"
    command = at.code[0].value
    assert command.startswith("python -m unlearn_core compose --runs") and "--alpha 0 0.25 0.5 0.75 1" in command
    at.multiselect(key="cp_runs").set_value(digits_runs[:1]).run()
    assert any("exactly 2" in w.value for w in at.warning)


def test_pages_without_a_selection_say_what_to_do(workspace_home):
    for page in ("pages/2_forget_set.py", "pages/3_unlearn.py"):
        at = _app(page)
        assert any("First choose a data set" in i.value for i in at.info), page
        assert at.get("page_link")


def test_an_uploaded_npz_is_stored_and_usable(workspace_home):
    import io

    from unlearn_core.ui import cache

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, train_images=rng.integers(0, 255, (60, 16, 16), dtype=np.uint8),
             train_labels=np.arange(60) % 2, test_images=rng.integers(0, 255, (20, 16, 16), dtype=np.uint8),
             test_labels=np.arange(20) % 2, classes=np.array(["benign", "malignant"]),
             train_site=np.where(np.arange(60) < 30, "A", "B"), test_site=np.where(np.arange(20) < 10, "A", "B"))
    path = cache.store_data_upload("scans.npz", buffer.getvalue())
    assert Path(path).is_file() and str(workspace_home) in path
    assert cache.store_data_upload("scans.npz", buffer.getvalue()) == path  # stored once, by content
    at = _app("pages/1_data_model.py", us__dataset=path, us__dataset_label="scans.npz")
    assert at.radio(key="dm_source").value == "upload"
    assert _metric(at, "Training images") == "60"
    assert at.radio(key="dm_model_source").value == "file"  # no shipped model for a user's data
    at.switch_page("pages/2_forget_set.py").run()
    at.multiselect(key="fs_values_site").set_value(["B"]).run()
    assert at.session_state["us.criteria"] == 'site == "B"'
    assert _metric(at, "Forget (training)") == "30"


def test_a_clinical_zip_is_stored_with_the_columns_the_user_picked(workspace_home):
    """A CSV with `filename` and `diagnosis` (not `file`/`label`), inside a folder of the ZIP."""
    import io
    import zipfile

    from PIL import Image

    from unlearn_core.data.catalog import load_dataset
    from unlearn_core.ui import cache

    buffer = io.BytesIO()
    rows = ["filename,diagnosis,site"]
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(40):
            image = io.BytesIO()
            Image.new("L", (12, 12), color=(i * 6) % 256).save(image, format="PNG")
            archive.writestr(f"study/img/{i}.png", image.getvalue())
            rows.append(f"img/{i}.png,{'glaucoma' if i % 2 else 'normal'},{'A' if i < 20 else 'B'}")
        archive.writestr("study/labels.csv", "\n".join(rows) + "\n")
    with pytest.raises(Exception, match="pick the column"):
        cache.store_data_upload("eyes.zip", buffer.getvalue())
    path = cache.store_data_upload("eyes.zip", buffer.getvalue(), file_column="filename", label_column="diagnosis")
    data = load_dataset(path)
    assert data.classes == ["glaucoma", "normal"] and len(data.metadata) == 40
    assert "site" in data.metadata.columns


@pytest.mark.parametrize("bad", ["/no/such/file.npz"])
def test_a_missing_upload_is_a_message_not_a_crash(workspace_home, bad):
    at = _app("pages/1_data_model.py", us__dataset=bad, us__dataset_label="gone.npz")
    assert at.error and "could not be loaded" in at.error[0].value


def test_uploads_are_named_by_their_file_not_their_storage_path():
    from unlearn_core.labels import dataset_name

    assert dataset_name("/home/u/.unlearn_studio/uploads/3f2a9c/user_digits.zip") == "user_digits.zip"
    assert dataset_name("C:\\studio\\uploads\\ab\\eyes.npz") == "eyes.npz"
    assert dataset_name("digits") == "digits"


def test_the_typed_example_fits_the_data_set():
    """The placeholder parses and names only columns the set has (issue 14: one fixed
    'vpf_mm ... camera == "iPhone"' example showed for every set)."""
    from unlearn_core.data.criteria import ForgetCriteria
    from unlearn_core.ui import forget_controls as fc

    site = fc.Control("site", "values", options=("A", "B"))
    width = fc.Control("width_px", "range", lo=10, hi=30, integer=True)
    assert fc.example_criteria([site], ["benign", "malignant"]) == 'e.g. site == "A" and label == "benign"'
    assert fc.example_criteria([site, width], ["x"]) == 'e.g. width_px >= 20 and label == "x"'
    assert fc.example_criteria([], []) == "e.g. fraction(0.1, seed=0)"
    ForgetCriteria.parse(fc.example_criteria([site, width], ["x"]).removeprefix("e.g. "))
    assert fc.typed_names([site, width]).startswith("label, site, width_px")


def test_forget_controls_round_trip_through_text():
    from unlearn_core.data.builtin import load_builtin
    from unlearn_core.data.criteria import ForgetCriteria
    from unlearn_core.ui import forget_controls as fc

    data = load_builtin("digits")
    controls = fc.build_controls(data)
    text = 'label in ("3", "5") and width_px >= 20 and fraction(0.5, seed=3)'
    values = fc.values_from_criteria(ForgetCriteria.parse(text), controls, data.classes)
    rebuilt = fc.criteria_from_values(values, controls, data.classes)
    original_mask = ForgetCriteria.parse(text).mask(data.metadata, data.classes)
    assert np.array_equal(rebuilt.mask(data.metadata, data.classes), original_mask)
    assert fc.criteria_from_values(fc.default_values(controls), controls, data.classes) is None
    # (its speed, < 150 ms at 21k rows, is measured by scripts/perf_dashboard.py, not asserted here)


def test_method_settings_have_plain_labels():
    from unlearn_core.ui import method_settings as ms

    assert ms.label("eps") == "Search radius ε (pixel change)"
    assert ms.label("epochs", "finetune") == "Passes over the kept images"
    assert ms.label("some_new_knob") == "Some new knob"  # fallback: humanized


def test_unlearn_page_starts_on_the_plain_defaults_even_for_a_demo_scenario(workspace_home):
    """No retrain-tuned values reach a user: on a built-in demo scenario (digits, class 3) the
    page offers no scenario preset and every setting shows the method's own default."""
    from unlearn_core.methods import get_method

    at = _app("pages/3_unlearn.py", us__criteria='label == "3"', **DIGITS)
    psg = get_method("psg")
    preset = at.selectbox(key="ul_preset_psg")
    assert preset.value == "(the method's defaults)"
    assert preset.options == ["(the method's defaults)", *sorted(psg.presets)]
    defaults = {f.name: f.default for f in psg.fields()}
    epochs = at.number_input(key="ul_set_psg_epochs")
    assert epochs.label == "Passes over the forget set"
    assert epochs.value == defaults["epochs"]
    assert at.number_input(key="ul_set_psg_inner_steps").value == defaults["inner_steps"]
    assert at.number_input(key="ul_set_psg_target_forget_acc").value == pytest.approx(defaults["target_forget_acc"])
    command = at.code[0].value
    assert "--set" not in command and "--preset" not in command  # nothing differs from the defaults
    assert not any("demo" in (o or "").lower() for o in preset.options)
    assert not any(" " not in (w.label or " ") and "_" in (w.label or "") for w in at.number_input)


def test_unlearn_page_asks_for_the_recipe_only_when_the_model_records_none(workspace_home, tmp_path):
    from unlearn_core.assets import load_demo_model
    from unlearn_core.data.builtin import load_builtin
    from unlearn_core.models.weights import save_model

    bare = save_model(load_demo_model(load_builtin("digits")), tmp_path / "bare.safetensors")  # no recipe
    at = _app("pages/3_unlearn.py", us__criteria='label == "3"',
              **{**DIGITS, "us__model": ModelChoice("file", path=str(bare), label="bare.safetensors")})
    assert at.checkbox(key="ul_retrain").value
    assert any("How was this model trained" in m.value for m in at.markdown)
    assert at.selectbox(key="ul_recipe_arch").value == "small_cnn"
    at.number_input(key="ul_recipe_epochs").set_value(30).run()
    at.number_input(key="ul_recipe_lr").set_value(0.02).run()
    command = at.code[0].value
    assert "--recipe" in command and "epochs=30" in command and "lr=0.02" in command
    at.checkbox(key="ul_retrain").uncheck().run()
    assert "--recipe" not in at.code[0].value
    assert not [n for n in at.number_input if n.key == "ul_recipe_epochs"]
    # the shipped demo model has its recipe: no fields, a line saying which recipe is used
    at = _app("pages/3_unlearn.py", us__criteria='label == "3"', **DIGITS)
    assert not [n for n in at.number_input if n.key == "ul_recipe_epochs"]
    assert any("shipped recipe" in c.value for c in at.caption)
    assert "--recipe" not in at.code[0].value


def test_runs_page_picks_the_session_run(digits_runs):
    at = _app("pages/6_runs.py", us__run_id=digits_runs[0], **DIGITS)
    assert at.selectbox(key="rn_run").value == digits_runs[0]


def test_typed_criteria_keep_their_wording(workspace_home):
    at = _app("pages/2_forget_set.py", **DIGITS)
    at.text_input(key="fs_text").set_value('label=="3"')
    at.button(key="fs_apply_text").click().run()
    assert at.session_state["us.criteria"] == 'label=="3"'
    assert at.multiselect(key="fs_classes").value == ["3"]


def test_a_missing_demo_model_is_no_dead_end_one_button_retrains_it(tmp_path, monkeypatch):
    """Without a usable demo model, Data & model says why and retrains it in the background;
    once the job is done the demo model is used."""
    from unlearn_core import assets
    from unlearn_core.runs.registry import Workspace

    monkeypatch.setattr(assets, "ASSETS_DIR", tmp_path / "no_assets")
    monkeypatch.setenv("UNLEARN_STUDIO_HOME", str(tmp_path / "home"))
    at = _app("pages/1_data_model.py", **DIGITS)
    assert any("no demo model" in e.value for e in at.error), [e.value for e in at.error]
    assert any("make-demo-models --only digits" in c.value for c in at.code)
    at.button(key="dm_demo_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    run_id = at.session_state["us.demo_retrain_run_ids"]["digits"]
    deadline = time.monotonic() + 600
    while Workspace().get(run_id).is_active and time.monotonic() < deadline:
        time.sleep(1)
    assert Workspace().get(run_id).status == "done", Workspace().get(run_id).error
    assert assets.workspace_demo_path("digits").is_file()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any("Using the demo model" in s.value for s in at.success)
    assert float(_metric(at, "Test accuracy").rstrip("%")) > 80


def test_compose_page_flags_candidates_that_forget_less_and_saves_none_silently(digits_runs):
    from unlearn_core.labels import NOTHING_SAVED
    from unlearn_core.runs.registry import Workspace
    from unlearn_core.runs.result import RunResult

    ws = Workspace()
    original = RunResult.of(ws.get(digits_runs[0])).original
    note = "Forgets less than every input run: accuracy 90.0% on the images asked to forget."
    candidates = [{"label": label, "params": {}, "metrics": {**original, "forget_test_acc": 0.9},
                   "forgetting_lost": True, "forgetting_note": note} for label in ("α=0", "α=1")]
    run = ws.create_run("compose", status="running", dataset="digits", method="interpolate",
                        parents=list(digits_runs))
    ws.set_status(run.id, "done", metrics=RunResult(blocks={"original": original}, candidates=candidates,
                                                    chosen=None).to_dict())
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in {**DIGITS, "us__run_id": digits_runs[0]}.items():
        at.session_state[key.replace("__", ".")] = value
    at.session_state["cp__run"] = run.id
    at.switch_page("pages/5_compose.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning]
    assert any(NOTHING_SAVED.split(":")[0] in i.value for i in at.info)
    assert sum(note in w for w in warnings) == 2  # each flagged candidate says why
    assert not any("Saved" in s.value or "closest" in s.value for s in at.success)  # nothing saved or claimed
    assert at.selectbox(key="cp_pick").label == "Candidate to save"
    # the Results page explains the missing model instead of showing scores
    at = _app("pages/4_results.py", us__run_id=run.id, **DIGITS)
    assert any(NOTHING_SAVED in w.value for w in at.warning)


def test_unlearn_page_says_where_the_run_will_stop(workspace_home, monkeypatch):
    """PSG stops at the automatic target by default: the page shows the library's estimate,
    computed once per model, forget set and seed (a fake estimator stands in here)."""
    from unlearn_core.ui import stop_text

    calls = []

    def fake_estimate(model, data, split, seed=0, device="cpu", cache=None):
        calls.append((data.name, len(split.forget_train), seed))
        return {"value": 0.12, "estimator": "remain_probe", "original_forget_acc": 0.98, "keep_case": False,
                "explanation": "a classifier fitted on the kept training images only"}

    monkeypatch.setattr(stop_text, "estimate", fake_estimate)
    at = _app("pages/3_unlearn.py", us__criteria='label == "3"', **DIGITS)
    assert at.selectbox(key="ul_set_psg_stop_at").value == "auto"
    assert any(i.value.startswith("Will stop near 12 % forget accuracy") for i in at.info), [i.value for i in at.info]
    assert any("Every training image of class “3” is in the forget set" in i.value for i in at.info)
    at.run()
    assert len(calls) == 1  # kept in the session, not estimated again on every rerun
    at.selectbox(key="ul_set_psg_stop_at").set_value("passes").run()
    assert not any("Will stop near" in i.value for i in at.info)
    at.selectbox(key="ul_method").set_value("finetune").run()
    assert not any("Will stop near" in i.value for i in at.info)


def test_results_page_shows_the_estimated_target_next_to_the_retrain(digits_runs):
    from unlearn_core.runs.registry import Workspace
    from unlearn_core.runs.result import RunResult

    ws = Workspace()
    source = ws.get(digits_runs[0])
    result = RunResult.of(source)
    result.diagnostics["stop_target"] = {"value": 0.12, "estimator": "remain_probe", "original_forget_acc": 0.98,
                                         "keep_case": False, "explanation": "x"}
    result.diagnostics["retired_classes"] = ["3"]
    run = ws.create_run("unlearn", status="running", dataset="digits", dataset_fingerprint=source.dataset_fingerprint,
                        base_model_hash=source.base_model_hash, criteria_text=source.criteria_text, method="psg",
                        retrain_run=source.retrain_run)
    from unlearn_core.models.weights import SPEC_KEY, file_metadata

    spec = file_metadata(ws.artifact_path(source.id, "model.safetensors"))[SPEC_KEY]
    ws.save_weights(run.id, ws.load_weights(source.id), {SPEC_KEY: spec})
    ws.set_status(run.id, "done", metrics=result.to_dict())
    at = _app("pages/4_results.py", us__run_id=run.id, **DIGITS)
    retrain = result.retrain["forget_train_acc"]
    assert any(m.value.startswith("Estimated stop target: 12 % forget accuracy")
               and f"real value: {100 * retrain:.0f} %" in m.value for m in at.markdown), [m.value for m in at.markdown]
    assert any("the run ended by switching off the model's output for it" in m.value for m in at.markdown)


def test_unlearn_page_takes_up_only_a_run_of_its_own_selection(workspace_home):
    """Another tab's run is named, without a Cancel button; a run of this selection is shown."""
    from unlearn_core.runs.jobs import process_start_time
    from unlearn_core.runs.registry import Workspace

    ws = Workspace()
    theirs = ws.create_run("unlearn", status="running", dataset="digits", criteria_text='label == "7"',
                           method="finetune")
    # a live process, so the page's housekeeping does not mark the run interrupted meanwhile
    ws.update(theirs.id, pid=os.getpid(), process_start=process_start_time(os.getpid()))
    try:
        at = _app("pages/3_unlearn.py", us__criteria='label == "3"', **DIGITS)
        assert any(theirs.id in i.value and "Another run is in progress" in i.value for i in at.info), \
            [i.value for i in at.info] + [m.value for m in at.markdown][:5]
        assert not any(b.label == "Cancel" for b in at.button)
        assert at.button(key="ul_start")  # the page's own controls, not the other run's panel
        at = _app("pages/3_unlearn.py", us__criteria='label == "7"', **DIGITS)
        assert any(b.label == "Cancel" for b in at.button), (  # the same selection: its run again
            [b.label for b in at.button], [i.value for i in at.info], [w.value for w in at.warning],
            [e.value for e in at.error])
        assert at.session_state["us.unlearn_run_id"] == theirs.id
    finally:
        ws.set_status(theirs.id, "cancelled")


def test_a_reload_keeps_the_selection_and_the_run_in_the_url(workspace_home):
    """The selection is mirrored into the query parameters, and a new session (a browser reload)
    that opens such an address starts where the old one was (issue 14, item 4)."""
    at = _app("pages/2_forget_set.py", **DIGITS)
    at.text_input(key="fs_text").set_value('label == "3"')
    at.button(key="fs_apply_text").click().run()
    assert at.query_params == {"data": "digits", "forget": 'label == "3"', "model": ModelChoice("shipped").key}

    reloaded = AppTest.from_file(APP, default_timeout=TIMEOUT)
    reloaded.query_params.update(at.query_params)
    reloaded.run()
    assert not reloaded.exception, [e.value for e in reloaded.exception]
    assert reloaded.session_state["us.dataset"] == "digits"
    assert reloaded.session_state["us.model"] == ModelChoice("shipped")
    assert reloaded.session_state["us.criteria"] == 'label == "3"'
    reloaded.switch_page("pages/2_forget_set.py").run()
    assert int(_metric(reloaded, "Forget (training)").replace(",", "")) == 146
    assert reloaded.query_params["forget"] == 'label == "3"'  # put back after the page switch
