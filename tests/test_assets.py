"""Demo models: the shipped ones match today's data and classify it well; a model made for other
data is refused with a way out; small pixel differences are measured, not a dead end."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unlearn_core import assets
from unlearn_core.assets import (
    ASSETS_DIR, check_demo_model, demo_model_path, load_demo_model, workspace_demo_path,
)
from unlearn_core.cli import main as cli_main
from unlearn_core.data.builtin import BUILTIN_SETS, load_builtin
from unlearn_core.data.criteria import ForgetCriteria, split_sets
from unlearn_core.data.pixel_audit import encode_checksums, image_checksums, structure_fingerprint
from unlearn_core.errors import UserError
from unlearn_core.models.weights import load_model, save_model
from unlearn_core.training import accuracy_on


@pytest.mark.parametrize("name", list(BUILTIN_SETS))
def test_shipped_model_matches_the_data_exactly_and_is_accurate(name, monkeypatch, tmp_path):
    monkeypatch.setenv("UNLEARN_STUDIO_HOME", str(tmp_path))  # no retrained copy can stand in
    data = load_builtin(name)
    check = check_demo_model(data)
    assert check.path == demo_model_path(name)
    assert check.exact, check.message
    assert accuracy_on(load_demo_model(data), data, data.test_indices) >= 0.90


@pytest.mark.parametrize("name", list(BUILTIN_SETS))
def test_demo_forget_group_is_a_minority(name):
    data = load_builtin(name)
    sizes = split_sets(data, ForgetCriteria.parse(BUILTIN_SETS[name].demo_forget)).sizes()
    share = sizes["forget_train"] / (sizes["forget_train"] + sizes["remain_train"])
    assert 0.05 <= share <= 0.25, f"{name}: forget group is {share:.1%} of the training data"
    assert sizes["forget_test"] > 0, "the demo must be measurable on held-out images"


def test_assets_stay_small():
    total = sum(path.stat().st_size for path in ASSETS_DIR.glob("*") if path.is_file())
    assert total < 5_000_000, f"assets/ is {total / 1e6:.1f} MB; keep it to a few MB"


# --- a demo model whose data differ ---------------------------------------------------------------
@pytest.fixture()
def digits_demo(tmp_path, monkeypatch):
    """The digits demo model re-saved into a private assets folder, recording the real data's
    structure, checksums and test accuracy, but a fingerprint that never matches: every check
    goes through the comparison a user's slightly different data would get."""
    data = load_builtin("digits")
    model = load_model(demo_model_path("digits"))
    shipped = tmp_path / "assets"
    monkeypatch.setattr(assets, "ASSETS_DIR", shipped)
    monkeypatch.setenv("UNLEARN_STUDIO_HOME", str(tmp_path / "workspace"))
    save_model(model, demo_model_path("digits"), {
        "data_fingerprint": "not-this-data",
        "data_structure": structure_fingerprint(data.images, data.metadata, data.classes),
        "image_checksums": encode_checksums(image_checksums(data.images)),
        "dataset": "digits", "test_acc": f"{accuracy_on(model, data, data.test_indices):.4f}",
    })
    return data


def _with_images(data, images):
    return dataclasses.replace(data, images=images)


def test_a_few_changed_pixels_are_measured_and_the_model_is_used(digits_demo):
    images = digits_demo.images.clone()
    images[:10, 0, 5, 5] = torch.where(images[:10, 0, 5, 5] < 255, images[:10, 0, 5, 5] + 1, 254)
    check = check_demo_model(_with_images(digits_demo, images))
    assert check.usable and not check.exact
    assert check.pixels.images_changed == 10 and check.pixels.min_levels_changed == 10
    assert "10 of 1,797 images differ" in check.message
    assert abs(check.measured_accuracy - check.recorded_accuracy) < 0.01
    assert "so it is used" in check.message
    assert load_demo_model(_with_images(digits_demo, images)) is not None


def test_images_that_changed_a_lot_are_refused_with_the_command_that_retrains(digits_demo):
    changed = _with_images(digits_demo, 255 - digits_demo.images)
    check = check_demo_model(changed)
    assert not check.usable
    assert check.measured_accuracy < check.recorded_accuracy - assets.ACCURACY_TOLERANCE
    assert "1,797 of 1,797 images differ" in check.message
    with pytest.raises(UserError, match="make-demo-models --only digits"):
        load_demo_model(changed)


def test_other_labels_or_metadata_are_refused_outright(digits_demo):
    metadata = digits_demo.metadata.copy()
    metadata.loc[0, "slant"] += 0.5
    check = check_demo_model(dataclasses.replace(digits_demo, metadata=metadata))
    assert not check.usable and check.measured_accuracy is None  # no accuracy can excuse it
    assert "different version of this data set" in check.message


def test_a_truncated_model_file_gets_a_message_not_a_traceback(digits_demo):
    path = demo_model_path("digits")
    path.write_bytes(path.read_bytes()[:1000])
    check = check_demo_model(digits_demo)
    assert not check.usable and "damaged" in check.message
    with pytest.raises(UserError, match="make-demo-models --only digits"):
        load_demo_model(digits_demo)


def test_a_deleted_model_file_gets_a_message_and_the_command(digits_demo, capsys):
    demo_model_path("digits").unlink()
    assert "no demo model" in check_demo_model(digits_demo).message
    code = cli_main(["unlearn", "--dataset", "digits", "--forget", 'label == "3"', "--no-record"])
    err = capsys.readouterr().err
    assert code == 2
    assert "make-demo-models --only digits" in err and "Traceback" not in err


def test_retraining_puts_a_matching_model_in_the_workspace_and_it_is_preferred(digits_demo, capsys):
    demo_model_path("digits").write_bytes(b"not a model")
    assert not check_demo_model(digits_demo).usable
    assert cli_main(["make-demo-models", "--only", "digits"]) == 0
    assert "digits: generated" in capsys.readouterr().out
    check = check_demo_model(digits_demo)
    assert check.exact and check.path == workspace_demo_path("digits")
    assert accuracy_on(load_demo_model(digits_demo), digits_demo, digits_demo.test_indices) >= 0.90
