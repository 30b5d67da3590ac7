"""Prompt study for world QA with SmolLM2 (1 thread): which prompt separates informative from
uninformative picture text best?  Tune on training scenes, report on test scenes.

usage: python qa_prompts.py tune|test VARIANT[,VARIANT...] [--scenes N] [--shots K|kind]
Writes one JSON line per (variant, shots) to benchmarks/results/qa_prompts.jsonl.
"""

import argparse
import json
import time
from collections import defaultdict

import torch

torch.set_num_threads(1)

from dediffusion.eval import qa  # noqa: E402
from dediffusion.llm import load_llm  # noqa: E402
from dediffusion.world import describe, human_caption, questions, test_scenes, train_scenes  # noqa: E402
from dediffusion.world.questions import QUESTION_KINDS  # noqa: E402

TUNE_SEED, EXAMPLE_SEED = 101, 3
SOURCES = {"description": describe, "human": human_caption, "blind": lambda s: ""}


def make(
    instruction="Answer the question about the picture with one word.",
    frame="Picture: {c}",
    question="Question: {q}",
    answer="Answer:",
    no_context="(no description)",
    chat=False,
    cap=False,
):
    def block(c, q):
        q = q[0].upper() + q[1:] if cap else q
        return frame.format(c=c.strip() or no_context) + "\n" + question.format(q=q) + "\n" + answer

    def build(context, q, examples=()):
        shots = "".join(block(e.context, e.question) + f" {e.answer}\n\n" for e in examples)
        head = instruction + "\n\n" if instruction else ""
        body = head + shots + block(context, q)
        if chat:  # SmolLM2's chat template, with the answer cue inside the assistant turn
            last = body.rfind(answer)
            user, cue = body[:last].rstrip(), body[last:]
            return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{cue}"
        return body

    return build


VARIANTS = {
    "base": make(),
    "no_instr": make(instruction=""),
    "instr_described": make(instruction="Answer the question about the picture described below with one word."),
    "instr_read": make(
        instruction="Read the description of a picture, then answer the question about it with one word."
    ),
    "instr_only_text": make(
        instruction="The text describes a picture. Answer the question using only the text, with one word."
    ),
    "frame_description": make(frame="Description: {c}"),
    "frame_picture_desc": make(frame="Picture description: {c}"),
    "frame_shows": make(frame="The picture shows {c}."),
    "frame_inpicture": make(frame="In the picture: {c}."),
    "qa_short": make(question="Q: {q}", answer="A:"),
    "answer_oneword": make(answer="Answer (one word):"),
    "cap": make(cap=True),
    "chat": make(chat=True),
    "chat_described": make(
        chat=True, instruction="Answer the question about the picture described below with one word."
    ),
    "read_oneword": make(
        instruction="Read the description of a picture, then answer the question about it with one word.",
        answer="Answer (one word):",
    ),
    "read_qa_short": make(
        instruction="Read the description of a picture, then answer the question about it with one word.",
        question="Q: {q}",
        answer="A:",
    ),
}


def examples_for(shots, source, kind=None):
    """`shots` solved examples from training scenes (EXAMPLE_SEED) through `source`, one per kind in
    turn, or all of `kind` when given."""
    scenes = train_scenes(40, seed=EXAMPLE_SEED)
    out, i = [], 0
    for scene in scenes:
        wanted = kind or QUESTION_KINDS[i % len(QUESTION_KINDS)]
        q = next((q for q in questions(scene) if q.kind == wanted), None)
        if q is None:
            continue
        out.append(qa.QAItem(SOURCES[source](scene), q.question, q.choices, q.answer))
        i += 1
        if len(out) == shots:
            break
    return out


def evaluate(lm, build, scenes, shots, kind_matched):
    asked = [(s, q) for s in scenes for q in questions(s)]
    cache = {}

    def score(prompts, choices):
        todo = [(p, c) for p, c in zip(prompts, choices) if (p, c) not in cache]
        todo = list(dict.fromkeys(todo))
        for (p, c), row in zip(todo, lm.score([t[0] for t in todo], [t[1] for t in todo])):
            cache[p, c] = row
        return [cache[p, c] for p, c in zip(prompts, choices)]

    result = {}
    for source, text in SOURCES.items():
        right = {True: defaultdict(list), False: defaultdict(list)}
        for kind in QUESTION_KINDS:
            group = [(s, q) for s, q in asked if q.kind == kind]
            if not group:
                continue
            ex = examples_for(shots, source, kind if kind_matched else None) if shots else []
            items = [qa.QAItem(text(s), q.question, q.choices, q.answer) for s, q in group]
            raw = score([build(i.context, i.question, ex) for i in items], [i.choices for i in items])
            prior = score([build("", i.question, ex) for i in items], [i.choices for i in items])
            for item, r, p in zip(items, raw, prior):
                for cal in (True, False):
                    row = [a - b for a, b in zip(r, p)] if cal else r
                    pick = item.choices[max(range(len(row)), key=row.__getitem__)]
                    right[cal][kind].append(pick == item.answer)
        for cal in (True, False):
            flat = [x for v in right[cal].values() for x in v]
            result[f"{source}{'' if cal else '_uncal'}"] = {
                "acc": sum(flat) / len(flat),
                "n": len(flat),
                "by_kind": {k: round(sum(v) / len(v), 3) for k, v in right[cal].items()},
            }
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("split", choices=("tune", "test"))
    parser.add_argument("variants")
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--shots", default="0")
    parser.add_argument("--seed", type=int, default=TUNE_SEED, help="training-scene seed of the tuning set")
    args = parser.parse_args()
    scenes = test_scenes(args.scenes) if args.split == "test" else train_scenes(args.scenes, seed=args.seed)
    lm = load_llm("smollm2")
    kind_matched = args.shots.endswith("k")
    shots = int(args.shots.rstrip("k"))
    for name in args.variants.split(","):
        start = time.perf_counter()
        result = evaluate(lm, VARIANTS[name], scenes, shots, kind_matched)
        record = {
            "split": args.split,
            "seed": args.seed,
            "scenes": args.scenes,
            "variant": name,
            "shots": args.shots,
            **result,
        }
        record["seconds"] = round(time.perf_counter() - start, 1)
        with open("benchmarks/results/qa_prompts.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        summary = "  ".join(f"{k} {v['acc']:.3f}" for k, v in result.items())
        print(f"{args.split} {name} shots={args.shots}: {summary}  ({record['seconds']} s)", flush=True)


if __name__ == "__main__":
    main()
