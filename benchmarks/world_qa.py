"""Question answering on world test scenes, the evaluation's QA section on its own.

Runs `dediffusion.eval.world_qa.world_qa` (what `dediffusion evaluate --llm ...` runs after the
reconstruction sections): every question about the first `--scenes` test scenes, the picture given as
nothing (blind), the human-style caption, the encoder's text as written, its unique-words form and the
full description; zero-shot and `--shots`-shot; answers ranked over the closed answer set, calibrated
against the context-free prior.

usage: python benchmarks/world_qa.py [--model bundled:world_encoder] [--llm smollm2] [--scenes 20]
       [--shots 3] [--name world_qa] [--threads N]
Writes benchmarks/results/NAME.{md,json}.
"""

from record import benchmark_parser, parse_args, provenance, provenance_lines, write_results

from dediffusion import DeDiffusion
from dediffusion.eval.world_qa import world_qa
from dediffusion.llm import load_llm


def to_markdown(record: dict) -> str:
    qa = record["qa"]
    shots = list(qa["shots"])
    lines = [
        f"# World question answering ({qa['num_questions']} questions about {qa['num_scenes']} test scenes)",
        "",
        f"Encoder `{record['model']}`, LLM `{record['llm']}`; QA took {qa['wall_time_s']:.0f} s.",
        "",
        "| picture given as | " + " | ".join(f"{k}-shot" for k in shots) + " |",
        "|---|" + "---|" * len(shots),
    ]
    for source in qa["shots"][shots[0]]:
        lines.append(f"| {source} | " + " | ".join(f"{qa['shots'][k][source]['accuracy']:.1%}" for k in shots) + " |")
    return "\n".join(lines + provenance_lines(record))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default="bundled:world_encoder")
    parser.add_argument("--llm", default="smollm2")
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--shots", type=int, default=3)
    parser.add_argument("--name", default="world_qa")
    args = parse_args(parser)
    model = DeDiffusion.from_pretrained(args.model).eval()
    qa = world_qa(model, load_llm(args.llm), args.scenes, args.shots)
    record = {"model": args.model, "llm": args.llm, **provenance(), "qa": qa}
    write_results(args.out, args.name, record, to_markdown(record))


if __name__ == "__main__":
    main()
