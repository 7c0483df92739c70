"""The typed run contract: requests round-trip through their command line, and the CLI parses
exactly what the dashboard writes."""

from __future__ import annotations

import pytest

from unlearn_core.cli import build_parser
from unlearn_core.errors import UserError
from unlearn_core.runs.recipe import Recipe
from unlearn_core.runs.registry import cli_command, command_argv
from unlearn_core.runs.requests import ComposeRequest, DemoModelsRequest, TrainRequest, UnlearnRequest

REQUESTS = [
    UnlearnRequest(dataset="oculoplastic", forget='vpf_mm >= 12 and label == "thyroid eye disease"'),
    UnlearnRequest(dataset="/data/my set.zip", forget="random(0.1)", method="finetune",
                   overrides={"epochs": 3, "lr": 0.01, "amp": True}, preset="fast", retrain=True, seed=7,
                   device="cpu", weights="/w/model.safetensors", arch="resnet18", label="try 2"),
    UnlearnRequest(dataset="/data/x.npz", forget="label == 1", retrain=True, weights="/w/bare.pt",
                   recipe=Recipe(epochs=30, lr=0.02, batch_size=32, momentum=0.85, weight_decay=1e-5)),
    UnlearnRequest(dataset="digits", forget="label == 1", retrain=True, recipe=Recipe(arch="allcnn")),
    TrainRequest(dataset="digits"),
    TrainRequest(dataset="fundus", arch="allcnn", epochs=3, batch_size=32, lr=0.01, momentum=0.8,
                 weight_decay=1e-3, seed=2, retrain=True,
                 forget='device == "Cirrus 800 FA"', out="m.safetensors", label="ref"),
    ComposeRequest(runs=("a-1", "b-2")),
    ComposeRequest(runs=("a-1", "b-2", "c-3"), strategy="blockwise", blocks={"head": 1, "block2": 2},
                   repair_epochs=2, repair_head_only=True, recalibrate=False, select="α=0.5", seed=3),
    ComposeRequest(runs=("a-1", "b-2"), alphas=(0.0, 0.25, 1.0)),
    ComposeRequest(runs=("a-1",), strategy="task_sum", scales=(0.5, 1.5)),
    DemoModelsRequest(),
    DemoModelsRequest(only=("digits", "fundus"), out="assets"),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_a_request_reads_back_from_its_own_command_line(request_):
    assert type(request_).from_argv(request_.to_argv()) == request_
    recorded = cli_command(request_.to_argv())
    assert type(request_).from_argv(command_argv(recorded)) == request_


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_the_cli_parses_what_a_request_writes_into_the_same_request(request_):
    args = build_parser().parse_args(request_.to_argv())
    assert type(request_).from_args(args) == request_


def test_unlearn_overrides_are_written_so_the_method_can_type_them():
    argv = UnlearnRequest(dataset="digits", forget="label == 3", overrides={"amp": False, "lr": 0.5}).to_argv()
    assert argv[argv.index("--set") + 1] == "amp=false" and "lr=0.5" in argv
    assert UnlearnRequest.from_argv(argv).overrides == {"amp": "false", "lr": "0.5"}
    assert UnlearnRequest(dataset="digits", forget="label == 3", overrides={"amp": False}).overrides == {"amp": "false"}


def test_record_fields_carry_the_base_model():
    fields = REQUESTS[1].record_fields()
    assert fields["base_weights"] == "/w/model.safetensors" and fields["base_arch"] == "resnet18"
    assert REQUESTS[0].record_fields()["base_weights"] == ""


def test_a_command_of_another_kind_is_refused():
    with pytest.raises(UserError, match="Not a `compose` command"):
        ComposeRequest.from_argv(["unlearn", "--dataset", "digits"])


def test_retrain_without_criteria_is_refused():
    with pytest.raises(UserError, match="--retrain needs --forget"):
        TrainRequest.from_argv(["train", "--dataset", "digits", "--retrain"])



def test_an_unreadable_command_is_a_user_error():
    with pytest.raises(UserError, match="required"):
        UnlearnRequest.from_argv(["unlearn", "--seed", "0"])


def test_the_recipe_travels_as_one_typed_option():
    request = UnlearnRequest(dataset="digits", forget="label == 1", retrain=True, recipe=Recipe(epochs=30))
    argv = request.to_argv()
    assert argv[argv.index("--recipe") + 1] == Recipe(epochs=30).to_text()
    assert UnlearnRequest.from_argv(argv).recipe == Recipe(epochs=30)
    assert "--recipe" not in UnlearnRequest(dataset="digits", forget="label == 1").to_argv()
    with pytest.raises(UserError, match="unknown setting 'optimizer'"):
        UnlearnRequest.from_argv(["unlearn", "--dataset", "d", "--forget", "label == 1", "--recipe", "optimizer=adam"])
