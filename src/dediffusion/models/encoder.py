"""The image encoder: backbone -> attentional pooler -> linear head, giving logits (B, N, V).

All N token positions are predicted at once (not autoregressive). The pooler holds N learned
position queries; each block runs self-attention over the queries, cross-attention from the queries
to the backbone's feature map (with fixed 2-D sine-cosine positions), and an MLP, all pre-norm.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import EncoderConfig
from .backbones import build_backbone


class PoolerBlock(nn.Module):
    def __init__(self, width: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm_self = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.norm_query = nn.LayerNorm(width)
        self.norm_context = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """queries (B, N, D), context (B, S, D) -> (B, N, D)."""
        x = self.norm_self(queries)
        queries = queries + self.self_attn(x, x, x, need_weights=False)[0]
        x, ctx = self.norm_query(queries), self.norm_context(context)
        queries = queries + self.cross_attn(x, ctx, ctx, need_weights=False)[0]
        return queries + self.mlp(self.norm_mlp(queries))


class AttentionalPooler(nn.Module):
    """N learned queries attend to a feature map and come out as N token states (B, N, D)."""

    def __init__(self, num_queries: int, width: int, depth: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, width) * 0.02)
        self.blocks = nn.ModuleList(PoolerBlock(width, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        queries = self.queries.expand(context.shape[0], -1, -1)
        for block in self.blocks:
            queries = block(queries, context)
        return self.norm(queries)


def sincos_positions(height: int, width: int, dim: int, device=None) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes (H*W, dim); dim must be divisible by 4."""
    quarter = dim // 4
    freqs = torch.exp(-math.log(10000.0) * torch.arange(quarter, device=device) / quarter)
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    angles_y = ys.reshape(-1, 1).float() * freqs
    angles_x = xs.reshape(-1, 1).float() * freqs
    codes = torch.cat([angles_y.sin(), angles_y.cos(), angles_x.sin(), angles_x.cos()], dim=1)
    return F.pad(codes, (0, dim - 4 * quarter))


class FeatureCache:
    """A frozen backbone's features by image content, for training, where each image comes back many times.

    Exact: a frozen backbone in eval mode maps the same pixels to the same features. Each image is run
    on its own (batch of one), so its features do not depend on the batch it first came in, and a
    resumed run computes bit for bit what an uninterrupted one had cached. Holds at most `max_bytes`.
    """

    def __init__(self, max_bytes: int = 2 << 30):
        self.max_bytes, self.used, self.store = max_bytes, 0, {}

    def __call__(self, backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
        rows = []
        for image in images:
            key = hashlib.blake2b(image.detach().cpu().numpy().tobytes(), digest_size=16).digest()
            features = self.store.get(key)
            if features is None:
                with torch.no_grad():
                    features = backbone(image[None])[0]
                if self.used + features.nbytes <= self.max_bytes:
                    self.store[key], self.used = features, self.used + features.nbytes
            rows.append(features)
        return torch.stack(rows)


class ImageEncoder(nn.Module):
    """Images (B, 3, H, W) in [-1, 1] -> token logits (B, num_tokens, vocab_size)."""

    def __init__(self, config: EncoderConfig, vocab_size: int):
        super().__init__()
        self.config = config
        if config.backbone == "conv":
            kwargs = {"channels": config.backbone_channels}
        else:  # an early stage keeps a finer map (where things are) at a cost in abstraction (what they are)
            kwargs = {"feature_stage": config.backbone_stage}
        self.backbone = build_backbone(config.backbone, pretrained=config.pretrained_backbone, **kwargs)
        if config.freeze_backbone and config.backbone != "conv":
            self.backbone.requires_grad_(False)
        self.project = nn.Linear(self.backbone.out_channels, config.width)
        self.pooler = AttentionalPooler(
            config.num_tokens, config.width, config.depth, config.num_heads, config.mlp_ratio
        )
        self.head = nn.Linear(config.width, vocab_size)
        # a logit offset per token position, image-independent: zero, or a starting text (init_slot_bias)
        self.slot_bias = nn.Parameter(torch.zeros(config.num_tokens, vocab_size))
        self.feature_cache = FeatureCache() if config.cache_features else None

    @property
    def backbone_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.backbone.parameters())

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()  # frozen: keep its normalisation statistics
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        cached = self.training and self.feature_cache is not None and self.backbone_frozen
        features = self.feature_cache(self.backbone, images) if cached else self.backbone(images)  # (B, C, h, w)
        _, _, height, width = features.shape
        features = features.flatten(2).transpose(1, 2)  # (B, h*w, C)
        if self.config.normalize_features:
            features = F.layer_norm(features, features.shape[-1:])
        context = self.project(features)  # (B, h*w, D)
        context = context + sincos_positions(height, width, context.shape[-1], context.device).to(context.dtype)
        return self.head(self.pooler(context)) + self.slot_bias  # (B, N, V)

    @torch.no_grad()
    def init_slot_bias(self, token_ids: list[int], logit: float) -> None:
        """Start out writing `token_ids` at the first positions: their slot-bias entries become `logit`."""
        if len(token_ids) > self.slot_bias.shape[0]:
            raise ValueError(
                f"a starting text of {len(token_ids)} tokens does not fit {self.slot_bias.shape[0]} tokens"
            )
        self.slot_bias.zero_()
        self.slot_bias[torch.arange(len(token_ids)), torch.tensor(token_ids, dtype=torch.long)] = logit
