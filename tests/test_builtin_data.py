"""Built-in sets, the ImageSet type and the data command line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from unlearn_core.cli import main
from unlearn_core.data import ImageSet, stratified_split
from unlearn_core.data.builtin import load_builtin
from unlearn_core.data.catalog import load_dataset
from unlearn_core.errors import UserError


def test_digits_are_real_images_with_measured_metadata():
    data = load_builtin("digits")
    assert data.images.shape == (1797, 1, 32, 32) and data.images.dtype == torch.uint8
    meta = data.metadata
    assert {"sample_id", "label", "split", "ink", "stroke_width_px", "width_px", "slant"} <= set(meta.columns)
    assert meta["sample_id"].is_unique
    # Derived columns are measurements of the drawn ink: a "1" is narrower than a "0".
    widths = meta.groupby("label")["width_px"].mean()
    assert widths[1] < widths[0] - 2
    assert np.corrcoef(meta["ink"], data.images.float().mean(dim=(1, 2, 3)))[0, 1] > 0.99


def test_split_is_stratified_seeded_and_persistent():
    data = load_builtin("digits")
    counts = data.class_counts()
    assert (counts["test"] / counts.sum(axis=1)).between(0.15, 0.25).all()
    again = stratified_split(data.metadata["label"].to_numpy(), 0.2, 0)
    assert (again == data.metadata["split"].to_numpy()).all()
    assert data.fingerprint() == load_builtin.__wrapped__("digits").fingerprint()


def test_imageset_rejects_inconsistent_inputs():
    meta = pd.DataFrame({"sample_id": ["a", "b"], "label": [0, 1], "split": ["train", "test"]})
    with pytest.raises(UserError, match="uint8"):
        ImageSet("x", torch.zeros(2, 1, 4, 4), meta, ["a", "b"])
    with pytest.raises(UserError, match="3 images but 2 metadata rows"):
        ImageSet("x", torch.zeros(3, 1, 4, 4, dtype=torch.uint8), meta, ["a", "b"])
    with pytest.raises(UserError, match="split"):
        ImageSet("x", torch.zeros(2, 1, 4, 4, dtype=torch.uint8), meta.drop(columns="split"), ["a", "b"])


def test_unknown_dataset_name_lists_the_choices():
    with pytest.raises(UserError, match="oculoplastic, fundus, digits"):
        load_dataset("cifar10")


def test_datasets_command_lists_every_builtin_with_its_columns(capsys):
    assert main(["datasets", "--json"]) == 0
    listing = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert set(listing) == {"oculoplastic", "fundus", "digits"}
    assert "vpf_mm" in listing["oculoplastic"]["metadata_columns"]
    assert "device" in listing["fundus"]["metadata_columns"]
    assert "device" not in listing["oculoplastic"]["metadata_columns"]
    for entry in listing.values():
        assert entry["n_train"] > entry["n_test"] > 0 and len(entry["classes"]) >= 3


def test_split_command_prints_the_four_sizes(capsys):
    assert main(["split", "--dataset", "digits", "--forget", 'label == "3"', "--json"]) == 0
    sizes = json.loads(capsys.readouterr().out)
    data = load_builtin("digits")
    threes = data.metadata["label"] == 3
    assert sizes["forget_train"] == int((threes & (data.metadata["split"] == "train")).sum())
    assert sizes["forget_test"] == int((threes & (data.metadata["split"] == "test")).sum())
    assert sizes["forget_train"] + sizes["remain_train"] == len(data.train_indices)


def test_cli_turns_user_errors_into_one_line(capsys):
    assert main(["split", "--dataset", "digits", "--forget", "colour == 3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "colour" in err
