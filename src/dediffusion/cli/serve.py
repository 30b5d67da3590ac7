"""`dediffusion serve`: the web demo (image -> text -> redrawn images) in a browser; needs the `serve` extra."""

from __future__ import annotations

import logging

from .common import Formatter

logger = logging.getLogger("dediffusion")


def add_serve(commands) -> None:
    parser = commands.add_parser(
        "serve", help="web demo: image -> editable text -> decoders' redrawings", formatter_class=Formatter
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.add_argument("--encoder", default="bundled:world_encoder", help="De-Diffusion model folder or bundled name")
    parser.add_argument(
        "--decoders",
        nargs="+",
        default=["bundled:decoder_a", "bundled:decoder_b"],
        help="decoders offered for redrawing: bundled names, diffusers pipeline folders or hub ids",
    )
    parser.add_argument("--num-inference-steps", type=int, default=25, help="denoising steps per redrawing")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="classifier-free guidance scale")
    parser.add_argument("--max-upload-mb", type=float, default=10.0, help="largest image file accepted")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs a network)")
    parser.set_defaults(handler=run_serve)


def run_serve(args) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        logger.error('the web demo needs gradio: pip install "dediffusion[serve]"')
        return 2
    from ..serve import Demo, ServeSettings, build_app, launch

    settings = ServeSettings(
        encoder=args.encoder,
        decoders=tuple(args.decoders),
        guidance_scale=args.guidance_scale,
        num_inference_steps=args.num_inference_steps,
        device=args.device,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
    )
    demo = Demo(settings)
    demo.warm_up()
    logger.info("serving on http://%s:%d (Ctrl+C stops)", args.host, args.port)
    launch(build_app(demo), args.host, args.port, args.share, settings.max_upload_bytes)
    return 0
