"""The web demo behind `dediffusion serve`: an image -> the encoder's text (editable) -> the chosen
decoders' redrawings, side by side.

`Demo` is the logic, plain Python and testable without a browser: it loads encoders and decoders by
name (bundled names, folders, hub ids; a pipeline with two text encoders such as SDXL goes through
`models.pipelines`) on first use and keeps them, and its `on_*` handlers return what the page shows
plus a status message. Whatever a user can get wrong (a corrupt, empty or huge image, a file over the
upload limit, a folder that is no model) becomes that message, never a traceback; unexpected errors are
logged with their traceback on the server and summarised in the page.

`build_app(demo)` lays the page out with gradio (the `serve` extra, imported only there) and
`launch(app, ...)` serves it: local only unless `host` says otherwise, no public share link unless asked,
no fonts or analytics fetched from the network.
"""

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "bundled:world_encoder"
DEFAULT_DECODERS = ("bundled:decoder_a", "bundled:decoder_b")
DISPLAY_SIZE = 256  # pixels: the tiny world images are shown enlarged, with hard pixel edges


class DemoInputError(ValueError):
    """Input the demo cannot use; the message says what to do."""


@dataclass(frozen=True)
class ServeSettings:
    """What the demo loads and how it draws. `max_upload_bytes` bounds an uploaded file, `max_pixels`
    the decoded image (a small file can still decode to a huge image)."""

    encoder: str = DEFAULT_ENCODER
    decoders: tuple[str, ...] = DEFAULT_DECODERS
    guidance_scale: float = 3.0
    num_inference_steps: int = 25
    seed: int = 0
    device: str = "cpu"
    max_upload_bytes: int = 10 * 2**20
    max_pixels: int = 4096 * 4096
    num_examples: int = 8


def load_redrawer(name: str, device: str = "cpu"):
    """A decoder that draws from text: the project's `TextToImageDecoder` for single-text-encoder
    pipelines (SD 1.x/2.x, the world's), `PipelineTarget` for the rest (SDXL)."""
    from .assets import resolve
    from .models.decoder import TextToImageDecoder
    from .models.pipeline_folder import has_component, read_index
    from .models.pipelines import PipelineTarget

    if has_component(read_index(resolve(name)), "text_encoder_2"):
        return PipelineTarget.from_pretrained(resolve(name), device=device)
    return TextToImageDecoder.from_pretrained(name).to(device)


def redraw(decoder, text: str, settings: ServeSettings) -> torch.Tensor:
    """One image (3, H, W) in [-1, 1] drawn by `decoder` from `text` with the settings' seed."""
    from .models.dediffusion import sample_generators
    from .models.pipelines import PipelineTarget

    steps, scale, seed = settings.num_inference_steps, settings.guidance_scale, settings.seed
    if isinstance(decoder, PipelineTarget):
        return decoder.generate([text], scale, steps, [seed])[0]
    return decoder.generate([text], None, scale, steps, sample_generators([seed], decoder.device))[0]


def enlarged(image: torch.Tensor, size: int = DISPLAY_SIZE) -> Image.Image:
    """An image tensor (3, H, W) in [-1, 1] as a PIL image `size` pixels wide, for display."""
    from .data.images import to_pil

    pil = to_pil(image)
    return pil.resize((size, size), Image.Resampling.NEAREST if pil.width < size else Image.Resampling.BICUBIC)


class Demo:
    """The demo's models and steps; see the module docstring."""

    def __init__(self, settings: ServeSettings = ServeSettings()):
        self.settings = settings
        self._encoders: dict = {}
        self._decoders: dict = {}

    # ---- models, loaded by name on first use --------------------------------------------------

    def encoder(self, name: str):
        from .models.dediffusion import DeDiffusion

        name = self._checked_name(name, "encoder")
        if name not in self._encoders:
            logger.info("loading encoder %s", name)
            self._encoders[name] = DeDiffusion.from_pretrained(name, device=self.settings.device).eval()
        return self._encoders[name]

    def decoder(self, name: str):
        name = self._checked_name(name, "decoder")
        if name not in self._decoders:
            logger.info("loading decoder %s", name)
            self._decoders[name] = load_redrawer(name, self.settings.device)
        return self._decoders[name]

    def warm_up(self) -> None:
        """Load the default encoder and decoders now, so the first visitor does not wait for them."""
        self.encoder(self.settings.encoder)
        for name in self.settings.decoders:
            self.decoder(name)

    @staticmethod
    def _checked_name(name: str | None, what: str) -> str:
        if not name or not str(name).strip():
            raise DemoInputError(f"choose an {what}: a bundled name (bundled:...), a folder or a hub id")
        return str(name).strip()

    # ---- the steps ----------------------------------------------------------------------------

    def examples(self) -> list[Image.Image]:
        """The world's first test scenes (never used in training), enlarged for display."""
        from .world import render_batch, test_scenes

        images = render_batch(test_scenes(self.settings.num_examples), 32)
        return [enlarged(image) for image in images]

    def example_image(self, index: int, size: int) -> torch.Tensor:
        from .world import render_batch, test_scenes

        return render_batch(test_scenes(1, start=index), size)[0]

    def uploaded_image(self, path: str | None, size: int) -> torch.Tensor:
        """The uploaded file as the encoder sees it (3, size, size); raises DemoInputError or
        ImageLoadError with what went wrong."""
        from .data.images import load_image

        if not path:
            raise DemoInputError("upload an image file (PNG, JPEG, WebP, ...) or pick an example")
        limit = self.settings.max_upload_bytes
        if os.path.getsize(path) > limit:
            raise DemoInputError(f"the file is larger than the {limit / 2**20:g} MB upload limit; use a smaller image")
        return load_image(path, size, self.settings.max_pixels)

    def describe(self, image: torch.Tensor, encoder_name: str, unique_words: bool = False) -> str:
        """The encoder's text for one image (3, H, W) in [-1, 1]."""
        model = self.encoder(encoder_name)
        return model.encode(image[None].to(model.device), unique_words=unique_words)[0]

    def redraw_all(self, text: str, decoder_names: Sequence[str]) -> list[tuple[Image.Image, str]]:
        """(image, decoder name) for each decoder, each drawn from `text` with the same seed."""
        if not decoder_names:
            raise DemoInputError("choose at least one decoder to redraw the text with")
        return [(enlarged(redraw(self.decoder(n), text, self.settings)), n) for n in decoder_names]

    # ---- page handlers: what the page shows, and a status line --------------------------------

    def on_upload(self, path: str | None, encoder_name: str, unique_words: bool):
        """-> (image the encoder sees, text, status)."""
        return self._guarded(lambda: self._describe_shown(self.uploaded_image, path, encoder_name, unique_words), 3)

    def on_example(self, index: int, encoder_name: str, unique_words: bool):
        """-> (image the encoder sees, text, status) for world example `index`."""
        return self._guarded(lambda: self._describe_shown(self.example_image, index, encoder_name, unique_words), 3)

    def on_redraw(self, text: str, decoder_names: Sequence[str]):
        """-> (gallery of (image, decoder name), status)."""
        if not text or not text.strip():
            return [], "no text to draw from: upload an image, pick an example or type a text"
        done = f"redrawn by {', '.join(decoder_names or [])} (seed {self.settings.seed})"
        return self._guarded(lambda: (self.redraw_all(text, decoder_names), done), 2)

    def _describe_shown(self, load, source, encoder_name: str, unique_words: bool):
        size = self.encoder(encoder_name).decoder.resolution  # the size it was trained on; it resizes itself
        image = load(source, size)
        text = self.describe(image, encoder_name, unique_words)
        return enlarged(image), text, "the encoder wrote this text (edit it and redraw)"

    @staticmethod
    def _guarded(step, outputs: int):
        """Run `step`; on failure, empty outputs and the error as the status line."""
        from .errors import USER_ERRORS

        try:
            return step()
        except (DemoInputError, *USER_ERRORS) as error:
            message = f"error: {error}"
        except Exception as error:  # the page gets one line; the server log keeps the traceback
            logger.exception("demo step failed")
            message = f"error: {type(error).__name__}: {error} (details in the server log)"
        return (*([None] * (outputs - 1)), message)


# ---- the page -----------------------------------------------------------------------------------


def build_app(demo: Demo):
    """The gradio Blocks page for `demo`. Element ids (for scripts and tests): #upload, #examples,
    #encoder, #decoders, #unique-words, #seen, #text, #redraw, #reconstructions, #status."""
    import gradio as gr

    from .data.images import IMAGE_EXTENSIONS

    settings = demo.settings
    with gr.Blocks(title="De-Diffusion", analytics_enabled=False) as app:
        gr.Markdown("## De-Diffusion: image -> text -> image\nUpload an image or pick a world example.")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="image", file_types=list(IMAGE_EXTENSIONS), elem_id="upload")
                examples = gr.Gallery(
                    demo.examples(), label="world examples", columns=4, allow_preview=False, elem_id="examples"
                )
                encoder = gr.Dropdown(
                    [settings.encoder],
                    value=settings.encoder,
                    label="encoder",
                    allow_custom_value=True,
                    elem_id="encoder",
                )
                decoders = gr.Dropdown(
                    list(settings.decoders),
                    value=list(settings.decoders),
                    multiselect=True,
                    allow_custom_value=True,
                    label="decoders (bundled names, folders or hub ids)",
                    elem_id="decoders",
                )
                unique = gr.Checkbox(label="each word once", elem_id="unique-words")
            with gr.Column():
                seen = gr.Image(label="what the encoder sees", type="pil", interactive=False, elem_id="seen")
                text = gr.Textbox(label="text (editable)", lines=3, elem_id="text")
                button = gr.Button("redraw from the text", elem_id="redraw")
                status = gr.Markdown(elem_id="status")
        gallery = gr.Gallery(label="reconstructions", columns=4, format="png", elem_id="reconstructions")

        def pick(encoder_name, unique_words, evt: gr.SelectData):
            return demo.on_example(evt.index, encoder_name, unique_words)

        def redraw_written(text, decoder_names):  # after an image: a failed encoding keeps its error shown
            return (gr.skip(), gr.skip()) if not (text or "").strip() else demo.on_redraw(text, decoder_names)

        redraw_step = dict(fn=demo.on_redraw, inputs=[text, decoders], outputs=[gallery, status])
        after_text = {**redraw_step, "fn": redraw_written}
        upload.upload(demo.on_upload, [upload, encoder, unique], [seen, text, status]).then(**after_text)
        examples.select(pick, [encoder, unique], [seen, text, status]).then(**after_text)
        button.click(**redraw_step)
    return app


def launch(
    app,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    max_upload_bytes: int = 10 * 2**20,
    block: bool = True,
):
    """Serve `app`; `block=False` returns once the server runs (close it with `app.close()`)."""
    import gradio as gr

    system_fonts = ["ui-sans-serif", "system-ui", "sans-serif"]  # no font download: the demo works offline
    theme = gr.themes.Default(font=system_fonts, font_mono=["ui-monospace", "monospace"])
    return app.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=max_upload_bytes,
        prevent_thread_lock=not block,
        ssr_mode=False,
        quiet=True,
        theme=theme,
    )
