"""The command line: fast start-up, methods listing, unlearn JSON, and its bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from unlearn_core.cli import main
from unlearn_core.runs.requests import ARCHITECTURE_NAMES, BUILTIN_NAMES, UnlearnRequest


def test_parser_constants_mirror_the_library():
    from unlearn_core.data.builtin import BUILTIN_SETS
    from unlearn_core.models.architectures import ARCHITECTURES
    from unlearn_core.training import TrainConfig
    from unlearn_core.cli import build_parser

    assert tuple(BUILTIN_SETS) == BUILTIN_NAMES
    assert tuple(ARCHITECTURES) == ARCHITECTURE_NAMES
    defaults = build_parser().parse_args(["train", "--dataset", "digits"])
    config = TrainConfig()
    assert (defaults.arch, defaults.epochs, defaults.batch_size, defaults.lr, defaults.seed, defaults.momentum,
            defaults.weight_decay) == (config.arch, config.epochs, config.batch_size, config.lr, config.seed,
                                       config.momentum, config.weight_decay)
    from unlearn_core.runs.recipe import Recipe

    recipe = Recipe()  # a recipe's unnamed settings are the train command's defaults
    assert (recipe.epochs, recipe.batch_size, recipe.lr, recipe.momentum, recipe.weight_decay) == (
        config.epochs, config.batch_size, config.lr, config.momentum, config.weight_decay)


def test_building_the_parser_does_not_import_torch():
    code = "import sys; from unlearn_core.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_methods_json_lists_every_method_with_typed_fields(capsys):
    assert main(["methods", "--json"]) == 0
    listing = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert {"retrain", "psg", "boundary_shrink"} <= set(listing)
    for method in listing.values():
        assert method["summary"] and method["fields"]
        for field in method["fields"]:
            assert {"name", "type", "default", "help", "min", "max", "choices"} <= set(field)
            assert field["help"], f"{method['name']}.{field['name']} has no help text"


@pytest.mark.parametrize("argv,message", [
    (["--method", "nosuch"], "Unknown method 'nosuch'; available:"),
    (["--method", "retrain", "--set", "bogus=1"], "no setting bogus; valid settings:"),
    (["--method", "retrain", "--set", "epochs=-3"], "epochs=-3 is below its minimum"),
    (["--method", "retrain", "--set", "epochs"], "--set expects key=value"),
])
def test_unlearn_bad_input_is_one_clear_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_STUDIO_HOME", str(tmp_path))
    code = main(["unlearn", "--dataset", "digits", "--forget", 'label == "3"', "--no-record", *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_unlearn_refuses_empty_and_whole_forget_sets(capsys):
    assert main(["unlearn", "--dataset", "digits", "--forget", "ink > 5", "--no-record"]) == 2
    assert "select" in capsys.readouterr().err
    assert main(["unlearn", "--dataset", "digits", "--forget", "ink >= 0", "--no-record"]) == 2
    assert "nothing would remain" in capsys.readouterr().err


def test_unlearn_prints_the_json_report_and_records_the_run(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_STUDIO_HOME", str(tmp_path))
    argv = ["unlearn", "--dataset", "digits", "--forget", 'label == "3"', "--method", "gradient_ascent",
            "--set", "epochs=1", "--retrain", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    report = summary["result"]
    for block in ("original", "unlearned", "retrain"):
        for key in ("forget_train_acc", "remain_train_acc", "forget_test_acc", "remain_test_acc", "test_acc",
                    "mia_loss_lr", "mia_svc_efficacy", "mia_membership_auc"):
            assert key in report["blocks"][block], (block, key)
    assert report["timing"]["unlearn"] > 0 and report["timing"]["retrain"] > 0
    assert report["comparison"]["distance_to_retrain"] is not None and report["comparison"]["avg_gap"] is not None
    assert report["comparison"]["collapsed"] in (True, False)
    assert report["blocks"]["retrain"]["forget_test_acc"] < 0.05, "the retrain reference never saw a 3"
    assert report["blocks"]["unlearned"]["forget_train_acc"] < report["blocks"]["original"]["forget_train_acc"]
    assert report["retrain_reused"] is False

    from unlearn_core.runs.registry import Workspace, command_argv

    workspace = Workspace()
    record = workspace.get(summary["run_id"])
    assert record.status == "done" and record.parents == [summary["retrain_run"]] == [record.retrain_run]
    assert UnlearnRequest.from_argv(command_argv(record.command)) == UnlearnRequest.from_argv(argv)
    assert record.metrics == report
    assert workspace.artifact_path(record.id, "model.safetensors").is_file()
    # The retrain reference's own command trains it again from the same data reference.
    reference = workspace.get(record.retrain_run)
    assert command_argv(reference.command)[:5] == ["train", "--dataset", "digits", "--retrain", "--forget"]
    # A second run with the same data, criteria, seed and recipe reuses the retrain reference.
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["result"]["retrain_reused"] is True and again["retrain_run"] == summary["retrain_run"]


def test_train_records_a_run_with_loadable_weights(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_STUDIO_HOME", str(tmp_path))
    out = tmp_path / "copy.safetensors"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    from unlearn_core.models.weights import load_model, state_hash
    from unlearn_core.runs.registry import Workspace

    record = Workspace().get(summary["run_id"])
    assert record.kind == "train" and record.status == "done" and record.config["arch"] == "small_cnn"
    recorded = load_model(Workspace().artifact_path(record.id, "model.safetensors"))
    assert state_hash(recorded) == state_hash(load_model(out)) == summary["model_hash"]
    assert 0.0 <= record.metrics["blocks"]["train"]["test_acc"] <= 1.0


def test_retrain_needs_forget_criteria(capsys):
    assert main(["train", "--dataset", "digits", "--retrain", "--no-record"]) == 2
    assert "--retrain needs --forget" in capsys.readouterr().err
