"""Baselines: every one runs behind the common interface and shows the property its paper relies on.

One small CNN is trained once (module fixture) on a 3-class subset of the real UCI digits,
average-pooled to 16×16 so the whole file stays fast on busy CPUs; the class "1" is forgotten.
Each property test compares against the original model or a run without the method's key
ingredient, so a broken implementation makes it fail (a mask that masks nothing, a teacher that
shares weights with the student, a "reset" that copies the same weights back...).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unlearn_core.methods.scrub as scrub_module
from unlearn_core.data.builtin import load_builtin
from unlearn_core.data.criteria import ForgetCriteria, split_sets
from unlearn_core.data.imageset import ImageSet
from unlearn_core.errors import UserError
from unlearn_core.methods import METHODS, CommonConfig, get_method
from unlearn_core.methods._loops import last_blocks
from unlearn_core.methods.base import UnlearnData
from unlearn_core.methods.boundary_expanding import expand_head, prune_shadow
from unlearn_core.methods.eu_k import reinitialize_blocks
from unlearn_core.methods.l1_sparse import l1_gamma, l1_norm
from unlearn_core.methods.salun import saliency_mask
from unlearn_core.models.architectures import Classifier
from unlearn_core.models.inference import predict_logits
from unlearn_core.progress import Cancelled
from unlearn_core.training import TrainConfig, accuracy_on, train_model

BASELINES = ("finetune", "gradient_ascent", "neggrad_plus", "random_labels", "boundary_expanding", "scrub",
             "l1_sparse", "salun", "cf_k", "eu_k")
FORGET = 'label == "1"'
#: The shortest run of each method that still exercises every phase (SCRUB: one max-pass).
QUICK = {"epochs": 1, "device": "cpu"}


# --- fixtures and helpers ------------------------------------------------------------------
@dataclasses.dataclass(repr=False)
class Setup:
    imageset: ImageSet
    split: object
    data: UnlearnData
    original: Classifier

    def __repr__(self) -> str:  # keeps assertion messages readable
        return f"Setup({self.imageset.name}, forget {FORGET})"


@pytest.fixture(scope="module")
def setup():
    """The 3-class digits subset, its forget split and one trained original model."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    digits = load_builtin("digits")
    rows = np.flatnonzero(digits.metadata["label"].to_numpy() < 3)
    small = F.avg_pool2d(digits.images[torch.from_numpy(rows)].float(), 2).round().to(torch.uint8)
    imageset = ImageSet("digits3", small, digits.metadata.iloc[rows].reset_index(drop=True), digits.classes[:3])
    split = split_sets(imageset, ForgetCriteria.parse(FORGET))
    original = train_model(imageset, imageset.train_indices,
                           TrainConfig(epochs=6, lr=0.05, device="cpu", seed=0)).model
    setup = Setup(imageset=imageset, split=split, data=UnlearnData(imageset, split), original=original)
    assert acc(setup, original, "forget_train") > 0.95 and acc(setup, original, "remain_train") > 0.95
    yield setup
    torch.set_num_threads(threads)


def acc(setup, model: Classifier, key: str) -> float:
    return accuracy_on(model, setup.imageset, getattr(setup.split, key))


def run(setup, name: str, **overrides):
    method = get_method(name)
    return method.run(setup.original, setup.data, method.make_config({**QUICK, **overrides}))


def fingerprint(module: torch.nn.Module) -> str:
    """Hash of every parameter and buffer (BatchNorm statistics included)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def block_state(model: Classifier, block: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.get_submodule(block).state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- the common interface ------------------------------------------------------------------
def test_every_baseline_is_registered_with_a_documented_config():
    assert set(BASELINES) <= set(METHODS)
    for name in BASELINES:
        cls = METHODS[name]
        assert cls.title and cls.summary and cls.citation and cls.__doc__
        config = cls.make_config()
        assert isinstance(config, CommonConfig)
        for info in cls.fields():
            assert info.help, f"{name}.{info.name} has no help text"
            if info.type in ("int", "float") and info.name != "seed":
                assert info.min is not None and info.max is not None, f"{name}.{info.name} has no range"


@pytest.mark.parametrize("name", BASELINES)
def test_runs_through_the_common_interface_and_returns_a_valid_model(setup, name):
    before = fingerprint(setup.original)
    events = []
    result = get_method(name).run(setup.original, setup.data, get_method(name).make_config(QUICK),
                                  on_progress=events.append)
    model = result.model
    assert isinstance(model, Classifier) and not model.training
    assert model.head.out_features == setup.imageset.num_classes == model.spec.num_classes
    assert all(p.requires_grad for p in model.parameters())  # nothing left frozen for later fine-tuning
    logits = predict_logits(model, setup.imageset.images, setup.split.remain_test)
    assert logits.shape == (len(setup.split.remain_test), 3) and np.isfinite(logits).all()
    assert fingerprint(model) != fingerprint(setup.original)  # it did something...
    assert fingerprint(setup.original) == before  # ...to a copy only
    assert len(result.history) == 1 and {"epoch", "loss", "forget_acc", "remain_acc"} <= set(result.history[0])
    assert result.seconds > 0
    assert events and "forget_acc" in events[-1].metrics and events[-1].fraction == pytest.approx(1.0)


@pytest.mark.parametrize("name", BASELINES)
def test_out_of_range_settings_raise_a_user_error_naming_the_field(name):
    method = get_method(name)
    common = {f.name for f in dataclasses.fields(CommonConfig)}
    own = [f for f in method.fields() if f.name not in common and f.min is not None]
    assert own, f"{name} exposes no ranged hyperparameter"
    for info in own:
        with pytest.raises(UserError, match=f"{name}: {info.name}="):
            method.make_config({info.name: info.min - 1})
    config = method.make_config()
    setattr(config, own[0].name, own[0].min - 1)  # an edited config is re-checked at run time
    with pytest.raises(UserError, match=f"{name}: {own[0].name}="):
        method.run(None, None, config)


@pytest.mark.parametrize("name", BASELINES)
def test_cancellation_raises_promptly(setup, name):
    calls, events = [], []

    def stop_on_third_check() -> bool:
        calls.append(time.perf_counter())
        return len(calls) >= 3

    method = get_method(name)
    started = time.perf_counter()
    with pytest.raises(Cancelled):
        method.run(setup.original, setup.data, method.make_config({"device": "cpu", "epochs": 50}),
                   on_progress=events.append, should_stop=stop_on_third_check)
    assert len(calls) == 3  # raised at the very check that said stop...
    assert len(events) <= 2 and not any("forget_acc" in e.metrics for e in events)  # ...checked every step
    assert time.perf_counter() - started < 30


# --- method properties ---------------------------------------------------------------------
def test_finetune_keeps_remain_accuracy(setup):
    model = run(setup, "finetune", epochs=2).model
    assert acc(setup, model, "remain_train") >= acc(setup, setup.original, "remain_train") - 0.02
    assert acc(setup, model, "remain_test") >= acc(setup, setup.original, "remain_test") - 0.05


@pytest.mark.parametrize("name, overrides", [
    ("gradient_ascent", {"epochs": 6, "lr": 1e-3}),  # the reference 1e-4 barely moves this confident model
    ("random_labels", {"epochs": 2}),
])
def test_forgetting_methods_lower_forget_accuracy(setup, name, overrides):
    model = run(setup, name, **overrides).model
    assert acc(setup, model, "forget_train") < acc(setup, setup.original, "forget_train") - 0.5


def test_neggrad_plus_forgets_through_its_ascent_term(setup):
    with_ascent = run(setup, "neggrad_plus", epochs=5, alpha=0.5).model
    without = run(setup, "neggrad_plus", epochs=5, alpha=1.0).model  # α = 1: plain fine-tuning on D_r
    assert acc(setup, with_ascent, "forget_train") < acc(setup, setup.original, "forget_train") - 0.5
    assert acc(setup, with_ascent, "forget_train") < acc(setup, without, "forget_train") - 0.3
    assert acc(setup, with_ascent, "remain_train") > 0.9  # the remain term keeps the rest


def test_scrub_teacher_never_changes(setup, monkeypatch):
    make_teacher, teachers = scrub_module.frozen_teacher, []

    def capture(model):
        teacher = make_teacher(model)
        teachers.append((teacher, fingerprint(teacher)))
        return teacher

    monkeypatch.setattr(scrub_module, "frozen_teacher", capture)
    result = run(setup, "scrub", epochs=2, msteps=1, lr=5e-3)
    (teacher, hash_at_start), = teachers
    assert fingerprint(teacher) == hash_at_start == fingerprint(setup.original)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert fingerprint(result.model) != hash_at_start  # the student did move away
    assert "max_loss" in result.history[0] and "max_loss" not in result.history[1]  # msteps = 1


def test_eu_k_reinitializes_the_last_blocks_before_training(setup):
    model = copy.deepcopy(setup.original)
    blocks = last_blocks(model, 2)
    assert blocks == ["body.block3", "head"]
    frozen = [b for b in model.blocks() if b not in blocks]
    torch.manual_seed(1)
    assert reinitialize_blocks(model, blocks) > 0
    for block in blocks:
        old, new = block_state(setup.original, block), block_state(model, block)
        changed = [k for k in old if not torch.equal(old[k], new[k]) and old[k].dtype.is_floating_point]
        assert changed == [k for k in old if old[k].dtype.is_floating_point], f"{block} kept {set(old) - set(changed)}"
    for block in frozen:
        assert same_state(block_state(setup.original, block), block_state(model, block))


@pytest.mark.parametrize("name", ["cf_k", "eu_k"])
def test_k_methods_leave_the_frozen_blocks_identical(setup, name):
    result = run(setup, name, epochs=2, k=2)
    trained = result.diagnostics["trained_blocks"]
    assert trained == ["body.block3", "head"]
    for block in setup.original.blocks():
        same = same_state(block_state(setup.original, block), block_state(result.model, block))
        assert same == (block not in trained), block
    assert torch.equal(result.model.mean, setup.original.mean)


def test_k_beyond_the_model_is_a_user_error(setup):
    with pytest.raises(UserError, match="k=9"):
        run(setup, "cf_k", k=9)


def test_salun_mask_covers_the_requested_fraction_and_unmasked_weights_stay(setup):
    ratio = 0.3
    method = get_method("salun")
    config = method.make_config({**QUICK, "mask_ratio": ratio})
    result = method.run(setup.original, setup.data, config)
    mask = saliency_mask(copy.deepcopy(setup.original), setup.data, config, torch.device("cpu"), ratio)
    total = sum(m.numel() for m in mask.values())
    assert abs(sum(float(m.sum()) for m in mask.values()) / total - ratio) < 1e-3
    assert result.diagnostics["mask_fraction"] == pytest.approx(ratio, abs=1e-3)
    before, after = dict(setup.original.named_parameters()), dict(result.model.named_parameters())
    moved = 0
    for name, m in mask.items():
        frozen = m == 0
        assert torch.equal(before[name][frozen], after[name][frozen]), f"unmasked weights of {name} changed"
        moved += int((before[name] != after[name])[~frozen].sum())
    assert moved > 0.5 * ratio * total  # the salient weights did train


def test_salun_mask_keeps_the_largest_forget_gradients(setup):
    model = copy.deepcopy(setup.original)
    config = get_method("salun").make_config(QUICK)
    mask = saliency_mask(model, setup.data, config, torch.device("cpu"), 0.5)
    model.eval()
    pixels = setup.imageset.images[setup.split.forget_train].float() / 255
    labels = setup.imageset.labels[setup.split.forget_train]
    grads = torch.autograd.grad(F.cross_entropy(model(pixels), labels, reduction="sum"), list(model.parameters()))
    names = [n for n, _ in model.named_parameters()]
    kept = torch.cat([g.abs().flatten()[mask[n].flatten() == 1] for n, g in zip(names, grads)])
    dropped = torch.cat([g.abs().flatten()[mask[n].flatten() == 0] for n, g in zip(names, grads)])
    assert kept.min() >= dropped.max() * (1 - 1e-4)  # one global threshold across all tensors
    head_share = float(mask["head.weight"].mean())
    assert 0.0 < head_share and len({float(m.mean()) for m in mask.values()}) > 1  # not per-tensor top-k


def test_boundary_expanding_returns_the_original_classes_only(setup):
    result = run(setup, "boundary_expanding", epochs=10)
    head = result.model.head
    assert head.out_features == 3 and head.weight.shape == (3, setup.original.head.in_features)
    assert result.diagnostics["shadow_class"] == 3
    assert result.diagnostics["forget_in_shadow"] > 0.5  # D_f really went to the shadow class
    logits = predict_logits(result.model, setup.imageset.images, setup.split.forget_train)
    assert logits.shape[1] == 3
    assert acc(setup, result.model, "forget_train") < acc(setup, setup.original, "forget_train") - 0.3


def test_shadow_head_expands_and_prunes_exactly(setup):
    head = copy.deepcopy(setup.original.head)
    wide = expand_head(head)
    features = torch.randn(5, head.in_features)
    assert wide.out_features == 4
    assert torch.allclose(wide(features)[:, :3], head(features))
    pruned = prune_shadow(wide, 3)
    assert torch.equal(pruned.weight, head.weight) and torch.equal(pruned.bias, head.bias)


def test_l1_gamma_decays_linearly_and_makes_weights_sparser(setup):
    assert [l1_gamma(1.0, e, 4, 0) for e in (1, 2, 3, 4)] == [1.0, 0.75, 0.5, 0.25]
    assert [l1_gamma(1.0, e, 4, 2) for e in (1, 2, 3, 4)] == [1.0, 0.5, 0.0, 0.0]
    penalized = run(setup, "l1_sparse", epochs=2, gamma=5e-3)
    plain = run(setup, "l1_sparse", epochs=2, gamma=0.0)  # same seed and batches: only the penalty differs
    assert [r["l1_gamma"] for r in penalized.history] == [5e-3, 2.5e-3]
    assert float(l1_norm(penalized.model)) < 0.95 * float(l1_norm(plain.model))
    assert acc(setup, penalized.model, "remain_train") > 0.9
