"""The image encoder: a frozen backbone read at a chosen stage, and its training-time feature cache."""

import torch
from conftest import micro, tiny_config

from dediffusion.config import load_config
from dediffusion.models.dediffusion import DeDiffusion
from dediffusion.models.encoder import FeatureCache, ImageEncoder

EFFNET = ["encoder.backbone=efficientnet_lite0", "encoder.pretrained_backbone=false", "encoder.image_size=32"]


def encoder(*overrides) -> ImageEncoder:
    return ImageEncoder(
        load_config(None, [*EFFNET, "encoder.num_tokens=4", "encoder.width=32", *overrides]).encoder, 10
    )


def test_backbone_stage_keeps_a_finer_map_with_that_stages_channels():
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    assert encoder("encoder.backbone_stage=2").backbone(images).shape == (2, 40, 4, 4)
    assert encoder().backbone(images).shape == (2, 1280, 1, 1)  # the conv head, stride 32


class CountingBackbone(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.images_seen = torch.nn.Conv2d(3, 4, 3, padding=1), 0

    def forward(self, images):
        self.images_seen += len(images)
        return self.conv(images)


def test_the_cache_runs_each_image_once_and_alone_and_gives_what_the_backbone_gives():
    backbone, cache = CountingBackbone().eval(), FeatureCache()
    images = torch.rand(6, 3, 8, 8)
    first = cache(backbone, images)
    again = cache(backbone, images[[5, 0, 2]])
    assert backbone.images_seen == 6
    expected = torch.cat([backbone.conv(image[None]) for image in images])  # one image at a time
    assert torch.equal(first, expected.detach()) and torch.equal(again, first[[5, 0, 2]])
    full = FeatureCache(max_bytes=first[0].nbytes * 2)
    full(backbone, images)
    assert len(full.store) == 2 and torch.equal(full(backbone, images), first)  # past its budget it computes


def test_a_frozen_backbone_is_cached_in_training_and_gradients_still_reach_the_pooler(monkeypatch):
    model = DeDiffusion(tiny_config("", "", *EFFNET, "encoder.backbone_stage=1"), micro()).train()
    images = torch.rand(4, 3, 8, 8) * 2 - 1
    calls = []
    original = model.encoder.backbone.forward
    monkeypatch.setattr(model.encoder.backbone, "forward", lambda x: calls.append(len(x)) or original(x))
    for step in range(2):
        model(images, torch.arange(4), step)["loss"].backward()
    assert calls == [1, 1, 1, 1]  # each image once, alone; the second step read the cache
    assert model.encoder.pooler.queries.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.encoder.backbone.parameters())
    model.eval().encode(images)
    assert calls[-1] == 4  # outside training the backbone runs on the batch as usual


def test_normalized_features_have_unit_scale_at_every_location(monkeypatch):
    model = encoder("encoder.backbone_stage=2", "encoder.pretrained_backbone=true").eval()  # large raw features
    seen = []
    monkeypatch.setattr(model.project, "forward", lambda x: seen.append(x) or torch.zeros(*x.shape[:2], 32))
    model(torch.rand(2, 3, 32, 32) * 2 - 1)
    (features,) = seen
    assert torch.allclose(features.mean(-1), torch.zeros(2, 16), atol=1e-4)
    assert torch.allclose(features.std(-1, unbiased=False), torch.ones(2, 16), atol=1e-3)


def test_an_encoder_saved_before_the_option_keeps_raw_features(tmp_path, micro_decoder_dir):
    import yaml

    from dediffusion.models.decoder import TextToImageDecoder

    decoder = TextToImageDecoder.from_pretrained(micro_decoder_dir)
    config = tiny_config(str(micro_decoder_dir), "", "encoder.normalize_features=false")
    DeDiffusion(config, decoder).save_pretrained(tmp_path / "m")
    file = tmp_path / "m" / "config.yaml"
    written = yaml.safe_load(file.read_text())
    del written["encoder"]["normalize_features"]  # as an older version wrote it
    file.write_text(yaml.safe_dump(written))
    images = torch.rand(3, 3, 8, 8) * 2 - 1
    old = DeDiffusion.from_pretrained(tmp_path / "m").eval()
    assert not old.config.encoder.normalize_features
    raw = DeDiffusion(config, decoder, vocab_mask=old.vocab_mask).eval()
    raw.encoder.load_state_dict(old.encoder.state_dict())
    assert torch.equal(old.logits(images), raw.logits(images))
