"""The text instrument: which words a decoder's loss can teach, and which words an encoder writes.

Decoder section (`--decoder`; skip with `--no-decoder-signal`). Each scene's true text comes in two
forms: the description (a sentence) and its content words shuffled (a bag: size, colour, shape and
position words of every object and the background, without "a", "at the", "and"). For each fact kind
one word of that kind is the slot: the background word, else the first object's shape, colour, size or
first position word. Every word of that kind (the candidates; single-token words only) is put in the
slot and ranked two ways, on the same noise draws for every word:
- first-order: the gradient of the denoising loss with respect to the slot's one-hot token (what
  Gumbel-softmax, straight-through and PEZ follow), summed over 8 noise draws;
- exact: the denoising loss with that word in the slot (what a zero-order search over words scores),
  on 1 and on 4 noise draws.
The table gives how often the best-ranked word is the true one (chance: one over the candidates).
Training timesteps are drawn as the world preset draws them (`train.timestep_bias` 1.0). Beside it:
the scene accuracy of the decoder's drawings of each form (what a text of that form can reach).

Encoder section (`--model`; skip with `--no-encoder`): the encoder's text as written
(`encode(images)`) and its unique-words form (`encode(images, unique_words=True)`: each word once, the
filler dropped). Per kind of word: recall (share of the scene's true words the text holds) and
precision (share of the text's words of that kind that are true of the scene); object colours count
under colour, the background colour under background. And the scene accuracy of `--decoder`'s
drawings of each text. Drawings: guidance 4, 20 steps, image i with seed i, float32. With
`--refine N [N ...]`, also the text as written refined for N rounds per image against `--decoder`'s exact
loss (`models/refine.py`: 8 gradient-ranked swaps per round, 4 fixed noise draws), with its seconds per
image: the quality/cost curve of refinement.

Scenes: `--split test` (the fixed test split) or `validation` (the training stream under
compare_encoders.py's validation seed, for choosing). This script folds estimator_signal.py,
word_signal.py, text_forms.py and encoder_text_forms.py (see git history).

usage: python benchmarks/text_instrument.py [--decoder bundled:decoder_a] [--model bundled:world_encoder]
       [--split test|validation] [--scenes 200] [--no-decoder-signal] [--no-encoder] [--refine N ...] [--name NAME]
       [--threads N] [--out DIR]
Writes DIR/NAME.{md,json} (default: benchmarks/results/text_instrument_SPLIT).
"""

import random
import time
from collections import defaultdict

import torch
from compare_encoders import VALIDATION_SEED  # the script's folder is on sys.path
from record import benchmark_parser, parse_args, provenance, provenance_lines, write_results

from dediffusion import DeDiffusion
from dediffusion.models.decoder import TextToImageDecoder
from dediffusion.models.dediffusion import sample_generators, until_end
from dediffusion.models.refine import refine_tokens
from dediffusion.models.sampling import generate_from_prompts
from dediffusion.world import BACKGROUNDS, COLORS, SHAPES, SIZES, describe, render_batch, test_scenes, train_scenes
from dediffusion.world.perception import PerceptionModel
from dediffusion.world.scoring import FACT_KINDS, accuracy_by_kind, scene_accuracy

GUIDANCE, STEPS = 4.0, 20
FIRST_ORDER_DRAWS, EXACT_DRAWS = 8, (1, 4)
TIMESTEP_BIAS = 1.0  # the world preset's train.timestep_bias
POSITION_WORDS = ("top", "bottom", "left", "right", "center")
WORDS = {
    "background": tuple(BACKGROUNDS),
    "position": POSITION_WORDS,
    "shape": SHAPES,
    "color": tuple(COLORS),
    "size": SIZES,
}
SIGNALS = (f"first-order ({FIRST_ORDER_DRAWS} draws)", *(f"exact ({k} draw{'s' * (k > 1)})" for k in EXACT_DRAWS))


# --- scenes and their true texts ---


def split_scenes(split: str, n: int) -> list:
    return test_scenes(n) if split == "test" else train_scenes(n, seed=VALIDATION_SEED)


def object_words(obj) -> list[str]:
    return [obj.size, obj.color, obj.shape, *obj.position.split()]


def content_words(scene) -> list[str]:
    return [w for obj in scene.objects for w in object_words(obj)] + [scene.background]


def true_text_forms(scenes, seed: int = 0) -> dict[str, list[list[str]]]:
    """Each scene's description and its shuffled content words, as word lists."""
    rng = random.Random(seed)
    bags = [rng.sample(words, len(words)) for words in map(content_words, scenes)]
    return {"sentence": [describe(s).split() for s in scenes], "bag": bags}


def slot_word(scene, kind: str) -> str:
    """The true word the slot holds: the background word, else the first object's word of that kind."""
    if kind == "background":
        return scene.background
    obj = scene.objects[0]
    return obj.position.split()[0] if kind == "position" else getattr(obj, kind)


# --- the decoder's signal: which word does each estimator pick? ---


def token_layout(decoder, words: list[str]) -> tuple[list[int], list[int]]:
    """The token ids of `words` and the index of each word's first token."""
    ids, starts = [], []
    for word in words:
        starts.append(len(ids))
        ids += decoder.text_token_ids(word)
    return ids, starts


def noise_of(seeds: list[int], draw: int, device) -> list[torch.Generator]:
    return sample_generators([10_000 * draw + s for s in seeds], device)


def first_order_scores(decoder, images, tokens, slots, candidates, seeds) -> torch.Tensor:
    """Gradient of the loss with respect to each candidate's one-hot entry at the slot (B, C)."""
    onehot = torch.nn.functional.one_hot(tokens, decoder.vocab_size).float().requires_grad_()
    grad = torch.zeros_like(onehot)
    for draw in range(FIRST_ORDER_DRAWS):
        states = decoder.soft_text_embeddings(onehot)
        loss = decoder.denoising_loss(
            images, states, noise_of(seeds, draw, decoder.device), timestep_bias=TIMESTEP_BIAS
        )
        grad += torch.autograd.grad(loss.sum(), onehot)[0]
    return grad[torch.arange(len(slots)), slots][:, candidates]


@torch.no_grad()
def exact_losses(decoder, images, tokens, slots, candidates, seeds) -> torch.Tensor:
    """Loss with each candidate in the slot, per noise draw (draws, B, C)."""
    losses = torch.zeros(max(EXACT_DRAWS), len(images), len(candidates))
    for c, word in enumerate(candidates.tolist()):
        text = tokens.clone()
        text[torch.arange(len(slots)), slots] = word
        states = decoder.token_states(text)
        for draw in range(max(EXACT_DRAWS)):
            generators = noise_of(seeds, draw, decoder.device)
            losses[draw, :, c] = decoder.denoising_loss(images, states, generators, timestep_bias=TIMESTEP_BIAS).cpu()
    return losses


def picks(decoder, images, tokens, slots, candidates, seeds) -> dict[str, torch.Tensor]:
    """Index into `candidates` of each signal's best word, per image."""
    first = first_order_scores(decoder, images, tokens, slots, candidates, seeds)
    exact = exact_losses(decoder, images, tokens, slots, candidates, seeds)
    best = [first.argmin(-1).cpu()] + [exact[:k].sum(0).argmin(-1) for k in EXACT_DRAWS]
    return dict(zip(SIGNALS, best))


def slot_items(decoder, scenes, texts, kind, candidates: list[str]) -> dict[int, list[tuple]]:
    """(scene index, token ids, slot, true candidate index) per scene whose slot word is a candidate,
    grouped by token count (one batch each)."""
    groups = defaultdict(list)
    for i, (scene, words) in enumerate(zip(scenes, texts)):
        truth = slot_word(scene, kind)
        if truth in candidates:
            ids, starts = token_layout(decoder, words)
            groups[len(ids)].append((i, ids, starts[words.index(truth)], candidates.index(truth)))
    return groups


def pick_rates(decoder, scenes, images, texts, kind) -> dict:
    """Share of scenes whose true slot word each signal ranks best, for one kind and text form."""
    candidates = [w for w in WORDS[kind] if len(decoder.text_token_ids(w)) == 1]
    candidate_ids = torch.tensor([decoder.text_token_ids(w)[0] for w in candidates], device=decoder.device)
    right, counted = dict.fromkeys(SIGNALS, 0), 0
    for items in slot_items(decoder, scenes, texts, kind, candidates).values():
        index, ids, slots, truth = (list(column) for column in zip(*items))
        tokens = torch.tensor(ids, device=decoder.device)
        chosen = picks(decoder, images[index], tokens, torch.tensor(slots), candidate_ids, index)
        for signal, pick in chosen.items():
            right[signal] += int((pick == torch.tensor(truth)).sum())
        counted += len(items)
    rates = {signal: hits / max(counted, 1) for signal, hits in right.items()}
    return {"candidates": candidates, "chance": 1 / max(len(candidates), 1), "scenes": counted, **rates}


def decoder_signal(decoder, scenes, forms, perception) -> dict:
    images = render_batch(scenes, decoder.resolution).to(decoder.device)
    signal = {
        kind: {form: pick_rates(decoder, scenes, images, texts, kind) for form, texts in forms.items()}
        for kind in FACT_KINDS
    }
    drawn = {}
    for form, texts in forms.items():
        strings = [" ".join(words) for words in texts]
        drawn[form] = drawn_accuracy(decoder, scenes, strings, perception) | {"example": strings[0]}
    return {"signal": signal, "drawn": drawn}


# --- what the encoder writes ---


def drawn_accuracy(decoder, scenes, texts: list[str], perception) -> dict[str, float]:
    images = generate_from_prompts(decoder, texts, GUIDANCE, STEPS)
    predicted = [p for chunk in images.split(256) for p in perception.predict(chunk)]
    return {"scene_accuracy": scene_accuracy(scenes, predicted), **accuracy_by_kind(scenes, predicted)}


def true_words(scene) -> dict[str, set[str]]:
    words = {kind: set() for kind in FACT_KINDS}
    for obj in scene.objects:
        for kind in ("shape", "color", "size"):
            words[kind].add(getattr(obj, kind))
        words["position"].update(obj.position.split())
    words["background"].add(scene.background)
    return words


def word_recall(scenes, texts: list[str]) -> dict[str, dict[str, float]]:
    """Per kind: recall, precision, and words of that kind per scene (written, true)."""
    hits, truths, written = (dict.fromkeys(FACT_KINDS, 0) for _ in range(3))
    for scene, text in zip(scenes, texts):
        said, truth = set(text.split()), true_words(scene)
        for kind in FACT_KINDS:
            mine = said & set(WORDS[kind])
            hits[kind] += len(truth[kind] & mine)
            truths[kind] += len(truth[kind])
            written[kind] += len(mine)
    return {
        kind: {
            "recall": hits[kind] / max(truths[kind], 1),
            "precision": hits[kind] / max(written[kind], 1),
            "written_per_scene": written[kind] / len(scenes),
            "true_per_scene": truths[kind] / len(scenes),
        }
        for kind in FACT_KINDS
    }


def encoder_texts(model, scenes) -> dict[str, list[str]]:
    images = render_batch(scenes, model.decoder.resolution)  # world images; the encoder resizes them itself
    return {"as written": model.encode(images), "unique words": model.encode(images, unique_words=True)}


def token_statistics(model, scenes) -> dict[str, float]:
    """Share of written positions that repeat the previous token, of texts that re-tokenize to the ids
    written, and written tokens per text (an encoder with `tokens.allow_end` stops at its end token)."""
    ids = model.encode_tokens(render_batch(scenes, model.decoder.resolution))  # (B, N)
    rows = until_end(ids, model.decoder.end_id) if model.config.tokens.allow_end else list(ids)
    pairs = sum(max(len(row) - 1, 0) for row in rows)
    repeats = sum(int((row[1:] == row[:-1]).sum()) for row in rows) / max(pairs, 1)
    read_back = model.decoder.read_back(model.decoder.decode_tokens(rows))
    round_trip = sum(back == row.tolist() for back, row in zip(read_back, rows)) / len(rows)
    return {"repeat_rate": repeats, "round_trip": round_trip, "tokens_per_text": sum(map(len, rows)) / len(rows)}


def refined_texts(model, decoder, scenes, steps: int) -> tuple[list[str], float]:
    """The text as written refined for `steps` rounds against `decoder`'s loss, and seconds per image."""
    images = render_batch(scenes, model.decoder.resolution)
    start, allowed = time.perf_counter(), model.vocab_mask.nonzero().squeeze(1)
    ids = model.encode_tokens(images)
    ids, _ = refine_tokens(decoder, images, ids, allowed, steps, timestep_bias=TIMESTEP_BIAS)
    return model.texts_of(ids), (time.perf_counter() - start) / len(scenes)


def encoder_section(model_path: str, decoder, scenes, perception, refine_steps=()) -> dict:
    model = DeDiffusion.from_pretrained(model_path).eval()
    forms = encoder_texts(model, scenes)
    seconds = {}
    for steps in refine_steps:
        forms[f"refined {steps}"], seconds[f"refined {steps}"] = refined_texts(model, decoder, scenes, steps)
    rows = {}
    for form, texts in forms.items():
        rows[form] = drawn_accuracy(decoder, scenes, texts, perception)
        rows[form] |= {"words": word_recall(scenes, texts), "examples": texts[:3]}
        rows[form] |= {"seconds_per_image": seconds[form]} if form in seconds else {}
        print(form, rows[form]["scene_accuracy"], flush=True)
    rows["as written"] |= token_statistics(model, scenes)
    return rows


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def signal_markdown(record: dict) -> list[str]:
    section = record["decoder_signal"]
    forms = list(section["drawn"])
    lines = [
        f"## Decoder `{record['decoder']}`: which word does each signal pick?",
        "",
        f"Share of scenes whose true slot word each signal ranks best (training timesteps drawn with bias "
        f"{TIMESTEP_BIAS:g}). Scenes counted and candidates in the JSON.",
        "",
        "| fact kind | chance | " + " | ".join(f"{form}: {s}" for form in forms for s in SIGNALS) + " |",
        "|---|---|" + "---|" * (len(forms) * len(SIGNALS)),
    ]
    for kind, by_form in section["signal"].items():
        chance = by_form[forms[0]]["chance"]
        cells = [percent(by_form[form][s]) for form in forms for s in SIGNALS]
        lines.append(f"| {kind} | {percent(chance)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"What the decoder draws from each form (guidance {GUIDANCE:g}, {STEPS} steps):",
        "",
        "| form (e.g.) | scene accuracy | " + " | ".join(FACT_KINDS) + " |",
        "|---|---|" + "---|" * len(FACT_KINDS),
    ]
    for form, row in section["drawn"].items():
        cells = [percent(row["scene_accuracy"])] + [percent(row[k]) for k in FACT_KINDS]
        lines.append(f"| {form} (`{row['example']}`) | " + " | ".join(cells) + " |")
    return lines + [""]


def encoder_markdown(record: dict) -> list[str]:
    lines = [
        f"## Encoder `{record['model']}` through `{record['decoder']}`",
        "",
        "Scene accuracy of the drawings, and per kind of word recall / precision (words written per scene "
        "of the scene's true words).",
        "",
        "| text | scene accuracy | " + " | ".join(FACT_KINDS) + " |",
        "|---|---|" + "---|" * len(FACT_KINDS),
    ]
    for form, row in record["encoder"].items():
        words = [row["words"][k] for k in FACT_KINDS]
        cells = [
            f"{w['recall']:.2f} / {w['precision']:.2f} ({w['written_per_scene']:.1f} of {w['true_per_scene']:.1f})"
            for w in words
        ]
        cost = f" ({row['seconds_per_image']:.2f} s/image)" if "seconds_per_image" in row else ""
        lines.append(f"| {form}{cost} | {percent(row['scene_accuracy'])} | " + " | ".join(cells) + " |")
    written = record["encoder"]["as written"]
    lines += ["", f"As written: {written.get('tokens_per_text', 0):.1f} tokens per text; "
              f"{percent(written['repeat_rate'])} of positions repeat the previous token; "
              f"{percent(written['round_trip'])} of texts re-tokenize to the ids written.", ""]  # fmt: skip
    lines += ["Examples (first three scenes):", ""]
    lines += [f"- {form}: " + " // ".join(f"`{t}`" for t in row["examples"]) for form, row in record["encoder"].items()]
    return lines + [""]


def to_markdown(record: dict) -> str:
    lines = [f"# The text instrument ({record['scenes']} {record['split']} scenes)", ""]
    lines += signal_markdown(record) if record["decoder_signal"] else []
    lines += encoder_markdown(record) if record["encoder"] else []
    lines.append(f"- wall time: {record['wall_time_s']} s")
    return "\n".join(lines + provenance_lines(record))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--decoder", default="bundled:decoder_a", help="decoder folder or bundled:NAME")
    parser.add_argument("--model", default="bundled:world_encoder", help="De-Diffusion encoder folder")
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--no-decoder-signal", action="store_true", help="skip the decoder section")
    parser.add_argument("--no-encoder", action="store_true", help="skip the encoder section")
    parser.add_argument("--refine", type=int, nargs="*", default=[], help="refinement rounds to score (e.g. 2 8)")
    parser.add_argument("--name", default=None, help="results name (default: text_instrument_SPLIT)")
    args = parse_args(parser)
    start = time.perf_counter()
    scenes, perception = split_scenes(args.split, args.scenes), PerceptionModel.load()
    decoder = TextToImageDecoder.from_pretrained(args.decoder)
    signal = None if args.no_decoder_signal else decoder_signal(decoder, scenes, true_text_forms(scenes), perception)
    encoder = None if args.no_encoder else encoder_section(args.model, decoder, scenes, perception, args.refine)
    record = {
        "decoder": args.decoder,
        "model": None if args.no_encoder else args.model,
        "split": args.split,
        "scenes": len(scenes),
        "timestep_bias": TIMESTEP_BIAS,
        **provenance(),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "decoder_signal": signal,
        "encoder": encoder,
    }
    write_results(args.out, args.name or f"text_instrument_{args.split}", record, to_markdown(record))


if __name__ == "__main__":
    main()
