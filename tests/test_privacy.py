"""The privacy verdict and the ε score say what they promise on made-up losses and AUCs."""

from __future__ import annotations

import numpy as np

from unlearn_core.privacy import epsilon_score, privacy_verdict


def test_verdict_against_the_retrained_model():
    good = privacy_verdict(0.52, 0.50)
    assert good.ok is True and "no better than with the retrained model ✓" in good.text
    leaky = privacy_verdict(0.71, 0.50)
    assert leaky.ok is False and "21 points better" in leaky.text
    streisand = privacy_verdict(0.30, 0.50)
    assert streisand.ok is False and "less" in streisand.text
    assert privacy_verdict(0.6, None).ok is None and "retrain reference" in privacy_verdict(0.6, None).text
    assert privacy_verdict(float("nan"), 0.5).ok is None


def test_epsilon_is_small_for_the_same_losses_and_large_for_separated_ones():
    rng = np.random.default_rng(0)
    same = epsilon_score(rng.exponential(1.0, 2000), rng.exponential(1.0, 2000))
    apart = epsilon_score(rng.normal(0.1, 0.01, 500), rng.normal(5.0, 0.5, 500))
    reversed_apart = epsilon_score(rng.normal(5.0, 0.5, 500), rng.normal(0.1, 0.01, 500))
    assert same < 0.3
    assert apart > 5 and reversed_apart > 5  # either direction gives the models away
    assert abs(apart - np.log(0.99 * 500 - 1)) < 0.1  # clipped at one image: finite
    assert np.isnan(epsilon_score(np.array([]), np.ones(3)))
