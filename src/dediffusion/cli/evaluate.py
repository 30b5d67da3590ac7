"""`dediffusion evaluate`: the paper's experiments on the world's test scenes or a folder of images."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .common import Formatter, add_threads_arg, set_threads

logger = logging.getLogger("dediffusion")


def add_evaluate(commands) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="the paper's experiments: reconstruction and transfer, cost, token ablation, few-shot, QA",
        formatter_class=Formatter,
    )
    parser.add_argument("--model", default="bundled:world_encoder", help="De-Diffusion model folder")
    parser.add_argument("--decoder-b", default="bundled:decoder_b", help="an outside decoder ('none' to skip)")
    parser.add_argument("--images", default=None, help="a folder of your images (default: world test scenes)")
    parser.add_argument("--num-images", type=int, default=100, help="images to reconstruct")
    parser.add_argument(
        "--guidance-scales", type=float, nargs="+", default=[1.0, 2.0, 4.0], help="the sweep (1: no guidance)"
    )
    parser.add_argument("--num-inference-steps", type=int, default=20, help="sampler steps per image")
    parser.add_argument("--inversion-steps", type=int, default=150, help="prompt-inversion steps per image")
    parser.add_argument(
        "--ablation-model", action="append", default=[], help="an encoder with another num_tokens (repeatable)"
    )
    parser.add_argument("--few-shot-episodes", type=int, default=200, help="5-way 1-shot episodes")
    parser.add_argument("--few-shot-scenes", type=int, default=1000, help="test scenes the episodes draw from")
    parser.add_argument("--llm", default=None, help="question answering: smollm2, a model folder or an http(s) URL")
    parser.add_argument("--llm-model", default=None, help="model name served at the --llm URL")
    parser.add_argument("--qa-scenes", type=int, default=50, help="test scenes whose questions the LLM answers")
    parser.add_argument("--qa-shots", type=int, default=3, help="solved examples in the few-shot prompt")
    parser.add_argument("--seed", type=int, default=0, help="image i is drawn with seed + i")
    parser.add_argument(
        "--draw-dtype", choices=("auto", "float32", "bfloat16"), default="auto",
        help="redraw under autocast to this dtype; auto: bfloat16 where the CPU (AVX512-BF16/AMX) or GPU "
        "computes it natively, else float32",
    )  # fmt: skip
    parser.add_argument("--out", default="evaluation", help="report folder (report.md, report.json, plots)")
    add_threads_arg(parser)
    parser.set_defaults(handler=run_evaluate)


def run_evaluate(args) -> int:
    import datetime

    from ..eval.report import machine_info, write_report
    from ..eval.suite import EvaluationSettings, run_evaluation
    from ..world.evaluation import WorldTask

    set_threads(args)
    settings = EvaluationSettings(
        model=args.model,
        decoder_b=None if args.decoder_b.lower() == "none" else args.decoder_b,
        images=args.images,
        num_images=args.num_images,
        guidance_scales=tuple(args.guidance_scales),
        num_inference_steps=args.num_inference_steps,
        draw_dtype=args.draw_dtype,
        inversion_steps=args.inversion_steps,
        ablation_models=tuple(args.ablation_model),
        few_shot_episodes=args.few_shot_episodes,
        few_shot_scenes=args.few_shot_scenes,
        llm=args.llm,
        llm_model=args.llm_model,
        qa_scenes=args.qa_scenes,
        qa_shots=args.qa_shots,
        seed=args.seed,
    )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    record = run_evaluation(settings, Path(args.out), task=None if args.images else WorldTask())
    record["command"] = args.command_line
    record["machine"] = machine_info()
    record["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    path = write_report(record, Path(args.out))
    sys.stdout.write(path.read_text())
    logger.info("wrote %s", path)
    return 0
