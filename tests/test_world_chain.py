"""The bundled world's whole chain at tiny sizes: pretrain decoder A on captioned scenes, write world
images, train a De-Diffusion encoder on the images alone with `dediffusion train --preset world`
(the core training code: the preset's sleep phase on decoder A's drawings, then its
Gumbel-softmax wake phase), then check that the denoising loss of its text falls below a fresh encoder's and the
empty prompt's, and below that of another image's text.

The loss is compared at fixed high-noise timesteps and noises: there the text decides the image, while
the training log's loss (uniform timesteps) is dominated by low-noise steps that no text can help.
"""

import json

import pytest
import torch
from PIL import Image

from dediffusion.cli import main
from dediffusion.data.images import load_image
from dediffusion.models.dediffusion import DeDiffusion
from dediffusion.world.decoders import pretrain_decoder_a

pytestmark = pytest.mark.xdist_group(name="world_chain")

SIZE = 16
TINY_DECODER_A = {
    "resolution": SIZE,
    "max_length": 32,
    "text_width": 32,
    "text_layers": 1,
    "unet_channels": (16, 32),
    "cross_attention": (True, True),
    "vae_channels": (8, 16),
    "attention_head_dim": 8,
}
ENCODER = [
    f"encoder.image_size={SIZE}",
    "encoder.num_tokens=8",
    "encoder.width=32",
    "encoder.depth=1",
    "encoder.num_heads=2",
]
TRAIN = [
    "train.batch_size=16",
    "train.log_every=1",
    "train.learning_rate=0.003",
    "train.warmup_steps=10",
    "tokens.init_text=a a a a a a a a",  # the preset's starting text, at 8 tokens
    "sleep.steps=300",
    "sleep.pairs=1024",
    "sleep.batch_size=32",
    "sleep.num_inference_steps=5",
]
EVAL_TIMESTEPS = torch.linspace(400, 950, 12).long()


@pytest.fixture(scope="session")  # session: xdist may interleave other modules, which ends a module scope
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    decoder_dir = pretrain_decoder_a(
        root / "decoder_a", vae_steps=150, text_steps=200, steps=400, batch_size=32, learning_rate=3e-3,
        config=TINY_DECODER_A, command="test",
    )  # fmt: skip
    assert main(["world", "sample", "-n", "64", "--size", str(SIZE), str(root / "images")]) == 0
    sets = [f"decoder.path={decoder_dir}", f"train.data={root / 'images'}", "train.steps=120", *ENCODER, *TRAIN]
    args = ["train", "--preset", "world", "-o", str(root / "run")]
    assert main([*args, *[a for s in sets for a in ("--set", s)]]) == 0
    return root


def fixed_loss(model, images, text_states):
    """Mean denoising loss over EVAL_TIMESTEPS with fixed noises (the text is the only difference)."""
    return model.decoder.fixed_noise_loss(images, text_states, EVAL_TIMESTEPS.tolist()).mean().item()


def test_world_chain_training_ran_and_logged_every_step(chain):
    losses = [json.loads(line)["loss"] for line in (chain / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 300 + 120 and all(0 < loss < 10 for loss in losses)
    assert (chain / "run" / "final" / "model.safetensors").is_file()


def test_world_chain_text_beats_a_fresh_encoder(chain):
    trained = DeDiffusion.from_pretrained(chain / "run" / "final").eval()
    torch.manual_seed(1)
    fresh = DeDiffusion(trained.config, trained.decoder).eval()
    paths = sorted((chain / "images").glob("*.png"))[:32]
    images = torch.stack([load_image(p, size=SIZE) for p in paths])
    with torch.no_grad():
        trained_loss = fixed_loss(trained, images, trained.decoder.encode_text(trained.encode(images)))
        fresh_loss = fixed_loss(trained, images, trained.decoder.encode_text(fresh.encode(images)))
        empty_loss = fixed_loss(trained, images, trained.decoder.encode_text([""] * len(paths)))
        texts = trained.encode(images)
        others = fixed_loss(trained, images, trained.decoder.encode_text(texts[1:] + texts[:1]))
    # the trained encoder's text lowers the loss below a fresh encoder's ("a a a ...") and the empty
    # prompt's, and it is about its own image: each image with the next image's text does much worse.
    # Measured on 1 thread (2026-12-04): 0.1279 vs fresh 0.1358, empty 0.1355, next image's text 0.1651;
    # train.seed 1-4 gave 0.906-0.953 x fresh. With 60 sleep steps on 512 drawings the ratio ranged
    # 0.965-1.0 over seeds and failed on this host (the encoder kept the starting text).
    assert trained_loss < 0.99 * fresh_loss, (trained_loss, fresh_loss)
    assert trained_loss < 0.99 * empty_loss, (trained_loss, empty_loss)
    assert trained_loss < 0.95 * others, (trained_loss, others)
    texts = trained.encode(images[:4])
    vocabulary = set(trained.decoder.tokenizer.get_vocab())
    assert all(word in vocabulary for text in texts for word in text.split())
    assert Image.open(paths[0]).size == (SIZE, SIZE)


def test_demo_writes_a_grid_and_prints_texts(chain, tmp_path, capsys):
    # any decoder can stand in for decoder B; here the chain's decoder A plays both parts
    model, out = chain / "run" / "final", tmp_path / "demo.png"
    args = ["demo", "--encoder", str(model), "--decoder-b", str(chain / "decoder_a"), "-n", "3", "-o", str(out)]
    assert main([*args, "--num-inference-steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("(true scene: ") == 3
    grid = Image.open(out)
    assert grid.height == 16 + 3 * 128 and grid.width > 3 * 128  # header + one row per image, 4 columns
