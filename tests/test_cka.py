"""Per-block CKA: the similarity measure's own properties, and the per-block view on a real model."""

from __future__ import annotations

import copy

import torch

from fixtures_small import tiny_digits, tiny_model, tiny_split
from unlearn_core.cka import block_features, linear_cka, per_block_similarity


def test_linear_cka_is_one_for_the_same_representation_up_to_rotation_and_scale():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=generator))
    assert abs(linear_cka(x, 3.0 * x @ rotation) - 1.0) < 1e-9
    assert linear_cka(x, torch.randn(200, 16, generator=generator)) < 0.2  # unrelated features


def test_per_block_view_finds_a_change_made_only_in_the_head():
    model, data, split = tiny_model(), tiny_digits(), tiny_split()
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.head.weight.copy_(torch.randn_like(changed.head.weight))
    rows = per_block_similarity(model, changed, model, data, split.forget_train, split.remain_train)
    assert [r.block for r in rows] == model.blocks()
    body = [r for r in rows if r.block != "head"]
    assert all(abs(r.unlearned_forget - 1) < 1e-6 and abs(r.unlearned_kept - 1) < 1e-6 for r in body)
    assert rows[-1].unlearned_forget < 0.99 and rows[-1].original_forget > 0.999
    assert set(block_features(model, torch.rand(3, data.channels, data.image_size, data.image_size))) == \
        set(model.blocks())
