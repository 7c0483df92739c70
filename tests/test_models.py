"""Architectures, embeddings and safe weight I/O."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
import torchvision

from unlearn_core.errors import UserError
from unlearn_core.models import ARCHITECTURES, ModelSpec, build_model, embeddings, load_model, predict_logits, save_model, state_hash
from unlearn_core.models.weights import read_weights


def spec(arch: str = "small_cnn", classes: int = 3, channels: int = 3, size: int = 32) -> ModelSpec:
    return ModelSpec(arch, classes, channels, size, (0.5,) * channels, (0.25,) * channels)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("channels,size", [(1, 32), (3, 64)])
def test_every_architecture_fits_size_and_channels(arch, channels, size):
    model = build_model(spec(arch, 4, channels, size)).eval()
    pixels = torch.rand(2, channels, size, size)
    assert model(pixels).shape == (2, 4)
    features = model.embed(pixels)
    assert features.ndim == 2 and features.shape[1] == model.head.in_features
    assert model.blocks()[-1] == "head" and len(model.blocks()) >= 3


def test_embeddings_and_logits_are_batched_without_dropping_samples():
    model = build_model(spec()).eval()
    images = torch.randint(0, 256, (37, 3, 32, 32), dtype=torch.uint8)
    assert predict_logits(model, images, batch_size=8).shape == (37, 3)
    assert embeddings(model, images, [0, 5, 36], batch_size=2).shape == (3, 128)
    assert predict_logits(model, images, []).shape == (0, 3)


def test_normalization_uses_the_data_statistics():
    model = build_model(ModelSpec("small_cnn", 2, 1, 16, (0.2,), (0.5,)))
    assert torch.allclose(model.normalize(torch.full((1, 1, 2, 2), 0.7)), torch.full((1, 1, 2, 2), 1.0))


def test_safetensors_round_trip_keeps_spec_weights_and_metadata(tmp_path):
    model = build_model(spec("allcnn"))
    path = save_model(model, tmp_path / "m.safetensors", {"data_fingerprint": "abc"})
    loaded = load_model(path)
    assert loaded.spec == model.spec
    assert state_hash(loaded) == state_hash(model)
    assert read_weights(path)[1]["data_fingerprint"] == "abc"
    assert not list(tmp_path.glob("*.tmp")), "atomic save leaves no temporary file"


def test_weights_only_state_dict_and_torchscript_load(tmp_path):
    model = build_model(spec())
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert state_hash(load_model(buffer.getvalue(), spec())) == state_hash(model)
    scripted = torch.jit.script(model.eval())
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    assert state_hash(load_model(buffer.getvalue(), spec())) == state_hash(model)


def test_plain_torchvision_resnet_checkpoint_is_mapped():
    net = torchvision.models.resnet18(num_classes=5)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    model = load_model(buffer.getvalue(), spec("resnet18", 5, 3, 64))
    assert torch.equal(model.head.weight, net.fc.weight)
    assert torch.equal(model.body.stem[0].weight, net.conv1.weight)


class Exploit:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"weight": Exploit()}, handle)
    with pytest.raises(UserError, match="Refusing to load"):
        load_model(path, spec())


def test_weights_of_another_architecture_name_the_layers():
    other = build_model(spec("small_cnn", classes=5))
    buffer = io.BytesIO()
    torch.save(other.state_dict(), buffer)
    with pytest.raises(UserError, match=r"head\.weight.*\(5, 128\)"):
        load_model(buffer.getvalue(), spec("small_cnn", classes=3))
    with pytest.raises(UserError, match="missing layers"):
        load_model(buffer.getvalue(), spec("allcnn", classes=5))


def test_junk_and_missing_files_give_clear_errors(tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"not a model at all")
    with pytest.raises(UserError, match="not a weight file"):
        load_model(tmp_path / "junk.bin", spec())
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "absent.safetensors")
    with pytest.raises(UserError, match="Unknown architecture"):
        build_model(spec("vgg99"))


@pytest.mark.parametrize("arch", ["small_cnn", "allcnn", "resnet18"])
def test_folding_batchnorm_into_convolutions_keeps_the_function(arch):
    from unlearn_core.models.batchnorm import batchnorms, fold_into_convolutions

    torch.manual_seed(0)
    model = build_model(spec(arch, 5, 3, 32))
    for norm in batchnorms(model):  # statistics and affine terms far from the identity they start at
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        before_count = len(batchnorms(model))
        folded = fold_into_convolutions(model)
        after = model(x)
    assert folded >= 1 and len(batchnorms(model)) == before_count - folded
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="eval mode"):
        fold_into_convolutions(model.train())


def test_psg_attacks_a_folded_copy_and_leaves_the_model_alone():
    from unlearn_core.methods.psg import frozen_copy
    from unlearn_core.models.batchnorm import batchnorms

    model = build_model(spec("small_cnn", 3, 1, 16)).train()
    frozen = frozen_copy(model)
    assert not batchnorms(frozen) and len(batchnorms(model)) == 3 and model.training
    assert not any(parameter.requires_grad for parameter in frozen.parameters())
