"""The retrain reference is trained with the original model's own recipe (issue 10, item 5).

The recipe comes from the weights file (or the shipped demo recipe), else the user gives it;
reuse is keyed on it; every face states the original's and the retrain's test accuracy.
"""

from __future__ import annotations

import json

import pytest

from unlearn_core.errors import UserError
from unlearn_core.runs.recipe import Recipe
from unlearn_core.runs.result import RunResult, Timing


# ---------------------------------------------------------------------- the text form

def test_a_recipe_reads_back_from_its_text():
    recipe = Recipe(arch="allcnn", epochs=30, batch_size=32, lr=0.01, momentum=0.85, weight_decay=1e-5)
    assert Recipe.parse(recipe.to_text()) == recipe
    assert Recipe.parse(Recipe().to_text()) == Recipe()
    assert "arch" not in Recipe().to_text()  # the model's own architecture


def test_unnamed_settings_take_the_train_defaults_and_spaces_are_allowed():
    recipe = Recipe.parse(" epochs = 30 , lr=0.01 ,")
    assert (recipe.epochs, recipe.lr) == (30, 0.01)
    assert (recipe.batch_size, recipe.momentum, recipe.weight_decay, recipe.arch) == (64, 0.9, 5e-4, None)
    assert Recipe.parse("weight-decay=0.001").weight_decay == 0.001


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("epochs", "name=value"),
    ("epochs=ten", "whole number"),
    ("lr=fast", "must be a number"),
    ("lr=nan", "finite"),
    ("epochs=3,epochs=4", "twice"),
    ("seed=3", "unknown setting 'seed'"),
    ("optimizer=adam", "unknown setting 'optimizer'"),
])
def test_a_bad_recipe_is_refused_with_what_was_wrong(text, message):
    with pytest.raises(UserError, match=message):
        Recipe.parse(text)


def test_the_recipe_a_trained_file_records_is_read_with_its_seed_left_out():
    from unlearn_core.training import TrainConfig

    key = TrainConfig(arch="small_cnn", epochs=30, lr=0.02, seed=5).recipe_key()  # what `train --out` writes
    recipe = Recipe.from_metadata({"recipe": key})
    assert recipe == Recipe(arch="small_cnn", epochs=30, lr=0.02)
    assert Recipe.from_metadata({}) is None and Recipe.from_metadata({"recipe": " "}) is None


# ---------------------------------------------------------------------- which recipe

@pytest.fixture(scope="module")
def digits():
    from unlearn_core.data.builtin import load_builtin

    return load_builtin("digits")


@pytest.fixture(scope="module")
def demo_model(digits):
    from unlearn_core.assets import load_demo_model

    return load_demo_model(digits)


def _save(model, path, recipe: str | None):
    from unlearn_core.models.weights import save_model

    return str(save_model(model, path, {"recipe": recipe} if recipe else {}))


def test_a_built_in_demo_model_uses_its_shipped_recipe(digits, demo_model):
    from unlearn_core.assets import DEMO_RECIPES
    from unlearn_core.pipeline import original_recipe, retrain_recipe

    found = original_recipe("digits", None, None)
    assert found.source == "demo"
    config = retrain_recipe(digits, demo_model, 3, "cpu", found.recipe)
    assert (config.epochs, config.lr, config.seed) == (DEMO_RECIPES["digits"].epochs, DEMO_RECIPES["digits"].lr, 3)


def test_the_retrain_uses_the_recipe_the_weights_file_records(digits, demo_model, tmp_path):
    from unlearn_core.pipeline import original_recipe, retrain_recipe
    from unlearn_core.training import TrainConfig

    path = _save(demo_model, tmp_path / "m.safetensors",
                 TrainConfig(epochs=30, lr=0.02, batch_size=32, weight_decay=1e-4).recipe_key())
    found = original_recipe("digits", path, None)
    assert found.source == "file"
    config = retrain_recipe(digits, demo_model, 0, "cpu", found.recipe)
    assert (config.epochs, config.lr, config.batch_size, config.weight_decay) == (30, 0.02, 32, 1e-4)
    # the same recipe given again is fine; another one contradicts the file and is refused
    assert original_recipe("digits", path, Recipe(epochs=30, lr=0.02, batch_size=32, weight_decay=1e-4)) == found
    with pytest.raises(UserError, match="differs from the recipe the original model records"):
        original_recipe("digits", path, Recipe(epochs=8))


def test_a_file_without_a_recipe_needs_one_from_the_user(digits, demo_model, tmp_path):
    from unlearn_core.pipeline import original_recipe, retrain_recipe

    path = _save(demo_model, tmp_path / "bare.safetensors", None)
    with pytest.raises(UserError, match=r"does not record how the original model was trained.*--recipe"):
        original_recipe("digits", path, None)
    found = original_recipe("digits", path, Recipe.parse("epochs=12,lr=0.03"))
    assert found.source == "given"
    assert retrain_recipe(digits, demo_model, 0, "cpu", found.recipe).epochs == 12


def test_a_recipe_for_another_architecture_or_out_of_range_is_refused(digits, demo_model):
    from unlearn_core.pipeline import retrain_recipe

    with pytest.raises(UserError, match="arch=resnet18, but the model is a small_cnn"):
        retrain_recipe(digits, demo_model, 0, "cpu", Recipe(arch="resnet18"))
    with pytest.raises(UserError, match="training recipe cannot be used.*epochs must be"):
        retrain_recipe(digits, demo_model, 0, "cpu", Recipe(epochs=0))


def test_the_cli_refuses_a_retrain_without_a_recipe_before_any_work(demo_model, tmp_path, monkeypatch, capsys):
    from unlearn_core.cli import main
    from unlearn_core.runs.registry import Workspace

    monkeypatch.setenv("UNLEARN_STUDIO_HOME", str(tmp_path / "home"))
    path = _save(demo_model, tmp_path / "bare.safetensors", None)
    code = main(["unlearn", "--dataset", "digits", "--weights", path, "--forget", 'label == "3"', "--retrain"])
    assert code == 2
    assert "--recipe" in capsys.readouterr().err
    assert Workspace().list_runs() == []  # nothing recorded
    code = main(["unlearn", "--dataset", "digits", "--weights", path, "--forget", 'label == "3"', "--retrain",
                 "--recipe", "epochs=ten"])
    assert code == 2 and "whole number" in capsys.readouterr().err


# ---------------------------------------------------------------------- reuse is keyed on the recipe

def _recorded_retrain(ws, data, model, config):
    from unlearn_core.models.weights import SPEC_KEY
    from unlearn_core.runs.registry import recipe_hash

    record = ws.create_run("retrain", status="running", dataset="digits", dataset_fingerprint=data.fingerprint(),
                           criteria_text='label == "3"', method="retrain", seed=0,
                           recipe_hash=recipe_hash(config.recipe_key()))
    ws.save_weights(record.id, model.state_dict(), {SPEC_KEY: json.dumps(model.spec.to_dict())})
    ws.set_status(record.id, "done", metrics=RunResult(blocks={"retrain": {"test_acc": 0.5}}).to_dict())
    return record


def test_a_retrain_made_with_another_recipe_is_never_reused(digits, demo_model, tmp_path, monkeypatch):
    from unlearn_core import pipeline
    from unlearn_core.runs import workflows
    from unlearn_core.runs.registry import Workspace
    from unlearn_core.runs.requests import UnlearnRequest

    ws = Workspace(tmp_path / "ws")
    request = UnlearnRequest(dataset="digits", forget='label == "3"', retrain=True, device="cpu")
    ours = pipeline.original_recipe("digits", None, None)
    other = pipeline.retrain_recipe(digits, demo_model, 0, "cpu", Recipe(epochs=3))
    stale = _recorded_retrain(ws, digits, demo_model, other)
    trained = []

    def fake_train(data, split, config, on_progress=None, should_stop=None):
        trained.append(config)
        return demo_model, 1.0

    monkeypatch.setattr(pipeline, "train_retrain", fake_train)
    _, _, run = workflows._reuse_or_train_retrain(ws, digits, demo_model, request, None, None, ours)
    assert not run["reused"] and run["id"] != stale.id
    assert len(trained) == 1 and trained[0].epochs == pipeline.retrain_recipe(
        digits, demo_model, 0, "cpu", ours.recipe).epochs
    # the new reference records its recipe (hash and weights metadata) and is reused next time
    from unlearn_core.models.weights import file_metadata
    from unlearn_core.runs.registry import WEIGHTS_NAME

    assert Recipe.from_metadata(file_metadata(ws.artifact_path(run["id"], WEIGHTS_NAME))).epochs == trained[0].epochs
    _, _, again = workflows._reuse_or_train_retrain(ws, digits, demo_model, request, None, None, ours)
    assert again == {"id": run["id"], "reused": True} and len(trained) == 1


# ---------------------------------------------------------------------- saved models carry their recipe

def test_a_model_trained_in_the_workspace_records_its_recipe(digits, tmp_path, monkeypatch):
    from unlearn_core import training
    from unlearn_core.models.architectures import build_model, spec_for
    from unlearn_core.models.weights import file_metadata
    from unlearn_core.pipeline import original_recipe
    from unlearn_core.runs import workflows
    from unlearn_core.runs.registry import WEIGHTS_NAME, Workspace
    from unlearn_core.runs.requests import TrainRequest

    monkeypatch.setattr(training, "train_model", lambda data, indices, config, **kw: training.TrainResult(
        model=build_model(spec_for(data, config.arch)).eval(), test_acc=0.5))
    ws = Workspace(tmp_path / "ws")
    request = TrainRequest(dataset="digits", epochs=30, lr=0.02, momentum=0.8, weight_decay=1e-3,
                           out=str(tmp_path / "out.safetensors"))
    run_id = workflows.train(request, ws)["run_id"]
    expected = Recipe(arch="small_cnn", epochs=30, lr=0.02, momentum=0.8, weight_decay=1e-3)
    for path in (ws.artifact_path(run_id, WEIGHTS_NAME), tmp_path / "out.safetensors"):
        assert Recipe.from_metadata(file_metadata(path)) == expected
        assert original_recipe("digits", str(path), None).recipe == expected  # used as an original later


# ---------------------------------------------------------------------- test accuracies side by side

def _result(original_remain=0.95, retrain_remain=0.94, recipe="arch=small_cnn,epochs=10", source="demo"):
    return RunResult(blocks={
        "original": {"test_acc": 0.92, "remain_test_acc": original_remain, "forget_test_acc": 0.9},
        "retrain": {"test_acc": 0.85, "remain_test_acc": retrain_remain, "forget_test_acc": 0.1},
        "unlearned": {"test_acc": 0.86, "remain_test_acc": 0.93, "forget_test_acc": 0.2}},
        retrain_recipe=recipe, retrain_recipe_source=source)


def test_the_reference_states_both_test_accuracies_and_the_recipe():
    reference = _result().reference()
    sentence = reference.sentence()
    assert "original 92.0%, retrain reference 85.0%" in sentence
    assert "95.0% and 94.0%" in sentence and "small_cnn, 10 epochs, learning rate 0.05" in sentence
    assert "shipped recipe" in sentence
    assert reference.warning() is None
    assert RunResult(blocks={"original": {"test_acc": 0.9}}).reference() is None
    # stored and read back
    assert RunResult.from_dict(_result().to_dict()).reference() == reference


def test_a_reference_much_worse_on_kept_images_is_flagged():
    reference = _result(original_remain=0.92, retrain_remain=0.65).reference()
    assert reference.suspicious
    assert "27.0 points less accurate" in reference.warning() and "--recipe" in reference.warning()


def test_the_cli_prints_both_test_accuracies(capsys):
    from unlearn_core.cli.unlearn_cmd import _print_summary

    blocks = {name: {**block, "forget_train_acc": 0.5, "remain_train_acc": 0.9, "mia_membership_auc": 0.5}
              for name, block in _result(retrain_remain=0.6).blocks.items()}
    result = RunResult(blocks=blocks, retrain_recipe="epochs=10", retrain_recipe_source="file",
                       timing=Timing(unlearn=1.0))
    _print_summary({"result": result.to_dict()})
    out = capsys.readouterr()
    assert "Test accuracy: original 92.0%, retrain reference 85.0%" in out.out
    assert "recorded in the model's weights file" in out.out
    assert "WARNING" in out.err and "another recipe" in out.err
