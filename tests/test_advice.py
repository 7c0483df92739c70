"""Advice after a bad result names the settings to change and warns about a weak original."""

from __future__ import annotations

from unlearn_core.advice import WEAK_ORIGINAL_ACC, collapse_advice, weak_original_warning


def test_collapse_advice_names_the_settings_and_their_values():
    text = collapse_advice("psg", {"lr": 0.002, "epochs": 16, "phi": 10.0})
    assert "lr, now 0.002" in text and "epochs, now 16" in text and "phi, now 10" in text
    # and by how much: each names the value to try
    assert "lr, now 0.002 → 0.001" in text and "epochs, now 16 → 8" in text and "phi, now 10 → 20" in text
    assert "epochs" not in collapse_advice("finetune", {"lr": 0.01, "epochs": 1})  # one pass cannot be halved
    assert "phi" not in collapse_advice("finetune", {"lr": 0.01, "epochs": 5, "phi": 1.0})
    assert "learning rate" in collapse_advice("custom", {})


def test_a_weak_original_is_named_with_its_accuracy():
    assert weak_original_warning(0.54).startswith("The original model is weak: 54% test accuracy")
    assert weak_original_warning(WEAK_ORIGINAL_ACC) is None
    assert weak_original_warning(None) is None and weak_original_warning(float("nan")) is None
