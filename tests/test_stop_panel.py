"""The Unlearn page stays usable while the stop estimate is made (issue 14, item 7): the estimate
runs in a background thread, the page says it is on its way, and shows it once it has arrived."""

from __future__ import annotations

import threading

from test_pages import DIGITS, _app, workspace_home  # noqa: F401 - the module's workspace fixture


def test_a_slow_estimate_does_not_hold_the_page(workspace_home, monkeypatch):  # noqa: F811
    from unlearn_core.ui import stop_text

    release = threading.Event()

    def slow_estimate(model, data, split, seed=0, device="cpu", cache=None):
        release.wait(timeout=60)  # stands in for the proxies' training
        return {"value": 0.07, "estimator": "proxy_retrain", "original_forget_acc": 0.95, "keep_case": False,
                "explanation": "small models trained on the kept images"}

    monkeypatch.setattr(stop_text, "estimate", slow_estimate)
    at = _app("pages/3_unlearn.py", us__criteria='label == "2"', **DIGITS)
    # the script ended while the estimate is still being made: controls drawn, the wait said
    assert at.button(key="ul_start") is not None
    assert any("Estimating where the run will stop" in c.value for c in at.caption), [c.value for c in at.caption]
    assert not any(i.value.startswith("Will stop near") for i in at.info)
    release.set()
    for _ in range(20):  # the page checks back; here a rerun stands in for its timer
        at.run()
        if any(i.value.startswith("Will stop near 7 %") for i in at.info):
            break
    assert any(i.value.startswith("Will stop near 7 %") for i in at.info), [i.value for i in at.info]
