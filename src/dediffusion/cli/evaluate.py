"""`dediffusion evaluate`: the paper's experiments on the world's test scenes or a folder of images."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .common import (
    add_command,
    add_decoder_arg,
    add_encoder_arg,
    add_output_arg,
    add_runtime_args,
    non_negative_int,
    positive_float,
    positive_int,
    set_threads,
)

logger = logging.getLogger("dediffusion")


def add_evaluate(commands) -> None:
    parser = add_command(
        commands,
        "evaluate",
        "the paper's experiments: reconstruction and transfer, cost, token ablation, few-shot, QA",
        "dediffusion evaluate --encoder bundled:world_encoder --num-images 20 -o evaluation/",
        "The paper's experiments on the world's test scenes (or --images, a folder of yours): each prompt "
        "source redrawn by the encoder's decoder and an outside one (scene accuracy, FD-EffNet), cost, token "
        "ablation, few-shot classification and, with --llm, question answering. Writes report.md, "
        "report.json and grids into the -o folder.",
    )
    add_encoder_arg(parser)
    add_decoder_arg(parser, "the encoder's decoder (default: the one it was trained with)")
    parser.add_argument("--decoder-b", default="bundled:decoder_b", help="an outside decoder ('none' to skip)")
    parser.add_argument("--images", default=None, help="a folder of your images (default: world test scenes)")
    parser.add_argument("--num-images", type=positive_int, default=100, help="images to reconstruct")
    parser.add_argument(
        "--guidance-scales", type=positive_float, nargs="+", default=[1.0, 2.0, 4.0], help="the sweep (1: no guidance)"
    )
    parser.add_argument("--num-inference-steps", type=positive_int, default=20, help="sampler steps per image")
    parser.add_argument("--inversion-steps", type=positive_int, default=150, help="prompt-inversion steps per image")
    parser.add_argument(
        "--ablation-model", action="append", default=[], help="an encoder with another num_tokens (repeatable)"
    )
    parser.add_argument("--few-shot-episodes", type=positive_int, default=200, help="5-way 1-shot episodes")
    parser.add_argument("--few-shot-scenes", type=positive_int, default=1000, help="test scenes the episodes draw from")
    parser.add_argument("--llm", default=None, help="question answering: smollm2, a model folder or an http(s) URL")
    parser.add_argument("--llm-model", default=None, help="model name served at the --llm URL")
    parser.add_argument(
        "--qa-scenes", type=positive_int, default=50, help="test scenes whose questions the LLM answers"
    )
    parser.add_argument("--qa-shots", type=non_negative_int, default=3, help="solved examples in the few-shot prompt")
    parser.add_argument(
        "--draw-dtype", choices=("auto", "float32", "bfloat16"), default="auto",
        help="redraw under autocast to this dtype; auto: bfloat16 where the CPU (AVX512-BF16/AMX) or GPU "
        "computes it natively, else float32",
    )  # fmt: skip
    add_output_arg(parser, "evaluation", "report folder (report.md, report.json, plots)", old=("--out",))
    add_runtime_args(parser, device=False)
    parser.set_defaults(handler=run_evaluate)


def run_evaluate(args) -> int:
    import datetime

    from ..eval.report import machine_info, write_report
    from ..eval.suite import EvaluationSettings, run_evaluation
    from ..world.evaluation import WorldTask

    set_threads(args)
    settings = EvaluationSettings(
        model=args.encoder,
        decoder=args.decoder,
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
    record = run_evaluation(settings, Path(args.output), task=None if args.images else WorldTask())
    record["command"] = args.command_line
    record["machine"] = machine_info()
    record["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    path = write_report(record, Path(args.output))
    sys.stdout.write(path.read_text())
    logger.info("wrote %s", path)
    return 0
