"""`dediffusion evaluate`: the paper's experiments on the world's test scenes or a folder of images;
`dediffusion evaluate-coco`: its COCO experiment, FID of redraws from the encoder's text and from captions."""

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


COCO_EXAMPLE = """\
dediffusion evaluate-coco coco/val2014 --encoder runs/sd2-coco/final --num-images 30000 --device cuda -o coco-fid/"""


def add_evaluate_coco(commands) -> None:
    parser = add_command(
        commands,
        "evaluate-coco",
        "COCO-style FID: photos redrawn from the encoder's text and from their captions",
        COCO_EXAMPLE,
        "The paper's COCO experiment: every captioned photo is redrawn by a diffusers text-to-image pipeline "
        "from the encoder's text and from its caption, and each set of redraws gets its FID against the photos "
        "(centre crops; torchmetrics with the FID Inception network: pip install 'dediffusion[coco]', weights "
        "downloaded once). Writes report.md, report.json, texts.jsonl and examples.png into the -o folder.",
    )
    parser.add_argument(
        "images", metavar="FOLDER",
        help="photos with captions: COCO's val2014/ (with annotations/captions_val2014.json beside it) or a folder "
        "with a captions.jsonl",
    )  # fmt: skip
    parser.add_argument(
        "--captions", default=None, metavar="FILE",
        help="a COCO captions_*.json or a captions.jsonl (default: found beside the images)",
    )  # fmt: skip
    add_encoder_arg(parser, default=None)
    add_decoder_arg(parser)
    parser.add_argument(
        "--pipeline", default=None, metavar="PATH|HUB_ID",
        help="the diffusers text-to-image pipeline that redraws from both (default: the encoder's decoder)",
    )  # fmt: skip
    parser.add_argument(
        "--num-images", type=positive_int, default=None,
        help="a random subset of this many photos, drawn with --seed (COCO-30K: 30000; default: all)",
    )  # fmt: skip
    parser.add_argument("--resolution", type=positive_int, default=256, help="side of the centre crops FID compares")
    parser.add_argument("--guidance-scales", type=positive_float, nargs="+", default=[3.0], help="one row each")
    parser.add_argument("--num-inference-steps", type=positive_int, default=50, help="the pipeline's sampler steps")
    parser.add_argument(
        "--full-text", action="store_true",
        help="give the pipeline the encoder's text as written (default: its unique words, as reconstruct --pipeline)",
    )  # fmt: skip
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
        help="the pipeline's weights (float16 or bfloat16 on a GPU)",
    )  # fmt: skip
    add_output_arg(parser, "coco-fid", "report folder (report.md, report.json, texts.jsonl, examples.png)")
    add_runtime_args(parser, batch_size=8)
    parser.set_defaults(handler=run_evaluate_coco)


def run_evaluate_coco(args) -> int:
    from ..assets import resolve
    from ..data.captions import find_captions
    from ..eval.coco import CocoSettings, run_coco_fid, write_coco_report
    from ..eval.fid import inception_v3
    from ..eval.report import machine_info
    from ..models.pipelines import PipelineTarget
    from ..records import utc_now
    from .common import load_model

    set_threads(args)
    captions = args.captions or str(find_captions(args.images))  # the errors a user can fix, before any loading
    features = inception_v3(args.device)
    model = load_model(args)
    pipeline = resolve(args.pipeline or model.decoder.source)
    pipeline = str(Path(pipeline).resolve()) if Path(pipeline).is_dir() else pipeline  # a folder: where it is
    target = PipelineTarget.from_pretrained(pipeline, device=args.device, dtype=args.dtype)
    settings = CocoSettings(
        images=args.images,
        captions=captions,
        num_images=args.num_images,
        resolution=args.resolution,
        guidance_scales=tuple(args.guidance_scales),
        num_inference_steps=args.num_inference_steps,
        batch_size=args.batch_size,
        seed=args.seed,
        unique_words=not args.full_text,
    )
    record = run_coco_fid(model, target, settings, features)
    record |= {"encoder": args.encoder, "pipeline": pipeline, "command": args.command_line}
    record |= {"machine": machine_info() | {"device": device_name(args.device)}, "date": utc_now()}
    path = write_coco_report(record, Path(args.output))
    sys.stdout.write(path.read_text())
    logger.info("wrote %s", path)
    return 0


def device_name(device: str) -> str:
    """The accelerator's name (e.g. the GPU model) or 'cpu'."""
    import torch

    device = torch.device(device)
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
