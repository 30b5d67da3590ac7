"""Which forms of a scene's true text does a decoder draw, and which of those words do encoders write?

Table 1 (per decoder): scene accuracy of the decoder's drawings of four texts of each test scene: the
full description; its content words (size, colour, shape, position words of every object, then the
background) in description order without "a", "at the", "and"; the same words shuffled (what an
encoder that writes a bag of words can reach); the first object's words and the background only.
Table 2 (per encoder, on its decoder or --decoder): scene accuracy of the drawings of the encoder's
text, and per kind of word the recall (share of the scene's true words the text holds) and precision
(share of the text's words of that kind that are true of the scene). Colours count object colours;
the background colour counts under "background".

usage: python benchmarks/text_forms.py --decoder DECODER [--encoders MODEL ...] [--scenes 200]
       [--name text_forms] [--threads N]
Writes benchmarks/results/NAME.{md,json}.
"""

import random

from record import (  # the script's folder is on sys.path
    benchmark_parser,
    parse_args,
    provenance,
    provenance_lines,
    write_results,
)

from dediffusion import DeDiffusion
from dediffusion.eval.reconstruction import generate_from_prompts
from dediffusion.eval.scene_accuracy import FACT_KINDS, accuracy_by_kind, scene_accuracy
from dediffusion.models.decoder import TextToImageDecoder
from dediffusion.world import describe, render_batch, test_scenes
from dediffusion.world.perception import PerceptionModel
from dediffusion.world.scene import BACKGROUNDS, COLORS, SHAPES, SIZES

GUIDANCE, STEPS = 4.0, 20
POSITION_WORDS = ("top", "bottom", "left", "right", "center")
WORD_KINDS = {"shape": SHAPES, "color": COLORS, "size": SIZES, "position": POSITION_WORDS, "background": BACKGROUNDS}


def object_words(obj) -> list[str]:
    return [obj.size, obj.color, obj.shape, *obj.position.split()]


def content_words(scene) -> list[str]:
    return [w for obj in scene.objects for w in object_words(obj)] + [scene.background]


def text_forms(scenes, seed: int = 0) -> dict[str, list[str]]:
    rng = random.Random(seed)

    def shuffled(scene) -> str:
        words = content_words(scene)
        rng.shuffle(words)
        return " ".join(words)

    return {
        "description": [describe(s) for s in scenes],
        "content words in order": [" ".join(content_words(s)) for s in scenes],
        "content words shuffled": [shuffled(s) for s in scenes],
        "first object's words": [" ".join(object_words(s.objects[0]) + [s.background]) for s in scenes],
    }


def true_words(scene) -> dict[str, set[str]]:
    words = {kind: set() for kind in WORD_KINDS}
    for obj in scene.objects:
        words["shape"].add(obj.shape)
        words["color"].add(obj.color)
        words["size"].add(obj.size)
        words["position"].update(obj.position.split())
    words["background"].add(scene.background)
    return words


def word_recall(scenes, texts: list[str]) -> dict[str, dict[str, float]]:
    """Per kind: recall, precision, and words of that kind per scene (written / true)."""
    hits, truths, written = dict.fromkeys(WORD_KINDS, 0), dict.fromkeys(WORD_KINDS, 0), dict.fromkeys(WORD_KINDS, 0)
    for scene, text in zip(scenes, texts):
        said, truth = set(text.split()), true_words(scene)
        for kind, vocabulary in WORD_KINDS.items():
            mine = said & set(vocabulary)
            if kind == "color":
                mine -= {scene.background}  # a background colour word that is also an object colour
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
        for kind in WORD_KINDS
    }


def drawn_accuracy(decoder, scenes, texts, perception) -> dict[str, float]:
    images = generate_from_prompts(decoder, texts, GUIDANCE, STEPS)
    predicted = [p for chunk in images.split(256) for p in perception.predict(chunk)]
    return {"scene_accuracy": scene_accuracy(scenes, predicted), **accuracy_by_kind(scenes, predicted)}


def percent(value: float) -> str:
    return f"{value:.1%}"


def to_markdown(record: dict) -> str:
    kinds = list(FACT_KINDS)
    lines = [
        f"# Text forms through `{record['decoder']}` ({record['scenes']} test scenes, guidance {GUIDANCE:g}, "
        f"{STEPS} steps)",
        "",
        "| text | scene accuracy | " + " | ".join(kinds) + " |",
        "|---|---|" + "---|" * len(kinds),
    ]
    for name, row in record["forms"].items():
        cells = [percent(row["scene_accuracy"])] + [percent(row[k]) for k in kinds]
        lines.append(f"| {name} (e.g. `{row['example']}`) | " + " | ".join(cells) + " |")
    if record["encoders"]:
        lines += [
            "",
            "## Encoders: scene accuracy, and recall / precision of each kind of word (words written per scene)",
            "",
            "| encoder | scene accuracy | " + " | ".join(WORD_KINDS) + " |",
            "|---|---|" + "---|" * len(WORD_KINDS),
        ]
        for path, row in record["encoders"].items():
            cells = [
                f"{w['recall']:.2f} / {w['precision']:.2f} ({w['written_per_scene']:.1f} of {w['true_per_scene']:.1f})"
                for w in (row["words"][k] for k in WORD_KINDS)
            ]
            lines.append(f"| `{path}` | {percent(row['scene_accuracy'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines + provenance_lines(record))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--decoder", required=True, help="decoder folder (or bundled:decoder_a)")
    parser.add_argument("--encoders", nargs="*", default=[], help="De-Diffusion model folders to score on it")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--name", default="text_forms")
    args = parse_args(parser)
    scenes, perception = test_scenes(args.scenes), PerceptionModel.load()
    decoder = TextToImageDecoder.from_pretrained(args.decoder)
    forms = {}
    for name, texts in text_forms(scenes).items():
        forms[name] = drawn_accuracy(decoder, scenes, texts, perception) | {"example": texts[0]}
        print(name, forms[name], flush=True)
    encoders = {}
    for path in args.encoders:
        texts = DeDiffusion.from_pretrained(path, decoder=decoder).eval().encode(render_batch(scenes))
        encoders[path] = drawn_accuracy(decoder, scenes, texts, perception)
        encoders[path] |= {"words": word_recall(scenes, texts), "example": texts[0]}
        print(path, encoders[path]["scene_accuracy"], flush=True)
    record = {"decoder": args.decoder, "scenes": args.scenes, **provenance(), "forms": forms, "encoders": encoders}
    write_results(args.out, args.name, record, to_markdown(record))


if __name__ == "__main__":
    main()
