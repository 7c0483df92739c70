"""The dashboard's words about where a run stops (issue 10, item 8), tested without Streamlit."""

from __future__ import annotations

import math

from fixtures_small import tiny_digits, tiny_split
from unlearn_core.runs.result import RunResult
from unlearn_core.ui import stop_text

TARGET = {"value": 0.12, "estimator": "remain_probe", "original_forget_acc": 0.98, "keep_case": False,
          "explanation": "a classifier fitted on the kept training images only, scored on the images to forget"}


def test_only_methods_set_to_stop_automatically_get_an_estimate():
    assert stop_text.stops_automatically({"stop_at": "auto", "epochs": 3})
    assert not stop_text.stops_automatically({"stop_at": "target"})
    assert not stop_text.stops_automatically({"stop_at": "passes"})
    assert not stop_text.stops_automatically({"epochs": 3})  # a method without the setting


def test_before_a_run_the_page_says_where_it_stops_and_why():
    text = stop_text.before_run_text(TARGET)
    assert text.startswith("Will stop near 12 % forget accuracy (the original model has 98 %).")
    assert "A classifier fitted on the kept training images only" in text
    assert "membership" not in text


def test_a_run_that_checks_its_forgetting_holds_says_so_in_the_forget_case_only():
    assert stop_text.checks_hold({"hold_check_steps": 20}) and not stop_text.checks_hold({"hold_check_steps": 0})
    assert not stop_text.checks_hold({"stop_at": "auto"})
    text = stop_text.before_run_text(TARGET, holds=True)
    assert "only once the forgetting holds" in text and "fine-tuned on the kept images" in text
    assert "forgetting holds" not in stop_text.before_run_text(TARGET)
    assert "forgetting holds" not in stop_text.before_run_text({**TARGET, "value": 0.97, "keep_case": True}, holds=True)


def test_the_keep_case_says_the_run_removes_membership_not_accuracy():
    text = stop_text.before_run_text({**TARGET, "value": 0.97, "keep_case": True})
    assert text.startswith("Will stop near 97 % forget accuracy")
    assert "would still recognize them" in text and "membership" in text


def test_an_explanation_that_already_is_the_sentence_is_used_as_it_is():
    sentence = "Will stop near 40% forget accuracy (the original model has 99%), estimated from x."
    assert stop_text.before_run_text({**TARGET, "explanation": sentence}) == sentence


def test_after_a_run_the_estimate_stands_next_to_the_retrains_real_value():
    result = RunResult(blocks={"retrain": {"forget_train_acc": 0.08}}, diagnostics={"stop_target": TARGET})
    check = stop_text.target_vs_retrain(result)
    assert math.isclose(check.error, 0.04)
    assert check.text() == ("Estimated stop target: 12 % forget accuracy (remain probe); the retrained model's "
                            "real value: 8 % (the estimate is off by 4 points).")
    alone = stop_text.target_vs_retrain(RunResult(diagnostics={"stop_target": TARGET}))
    assert alone.retrain is None and "no retrained model" in alone.text()
    assert stop_text.target_vs_retrain(RunResult(diagnostics={"flip_rate": 0.5})) is None
    assert stop_text.target_vs_retrain(RunResult(diagnostics={"stop_target": "garbled"})) is None


def test_a_class_taken_whole_is_named_with_what_the_run_does_to_it():
    assert stop_text.retires_classes({"retire_empty_classes": True})
    assert not stop_text.retires_classes({"retire_empty_classes": False}) and not stop_text.retires_classes({})
    data = tiny_digits()
    assert stop_text.classes_taken_whole(data, tiny_split('label == "3"')) == (["3"], True)
    assert stop_text.classes_taken_whole(data, tiny_split("fraction(0.3, seed=0)")) == ([], False)
    text = stop_text.before_run_text(TARGET, holds=True, retired=["3"])
    assert "Every training image of class “3” is in the forget set" in text and "no longer names it" in text
    two = stop_text.retired_text(["1", "3"])
    assert "classes “1” and “3”" in two and "no longer names them" in two
    assert "switching off" not in stop_text.before_run_text(TARGET, holds=True)
    assert "the run ended by switching off" in stop_text.retired_text(["3"], done=True)
