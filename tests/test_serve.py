"""The web demo: its steps without a browser (bad input gives a message, never a traceback), then end to
end in a real headless Chromium driven by playwright: upload a world image, wait for the text and the
decoders' images, and check them against what the library draws from the same text."""

from __future__ import annotations

import io
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dediffusion.serve import DISPLAY_SIZE, Demo, ServeSettings
from dediffusion.world import VOCABULARY, render_batch, test_scenes

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DECODERS = ("bundled:decoder_a", "bundled:decoder_b")
pytestmark = pytest.mark.xdist_group("serve")  # one demo (and its models) per worker


@pytest.fixture(scope="module")
def demo():
    demo = Demo(ServeSettings(decoders=DECODERS, num_inference_steps=4, max_upload_bytes=200_000))
    demo.warm_up()
    return demo


@pytest.fixture(scope="module")
def world_png(tmp_path_factory):
    from dediffusion.data.images import to_pil

    path = tmp_path_factory.mktemp("upload") / "scene.png"
    to_pil(render_batch(test_scenes(1, start=3), 32)[0]).save(path)
    return path


def assert_world_words(text: str) -> None:
    assert text.strip(), "the encoder wrote no text"
    assert set(text.split()) <= set(VOCABULARY), f"words outside the decoder's vocabulary: {text!r}"


# ---- the steps, without a browser ------------------------------------------------------------


def test_an_upload_is_described_in_the_decoders_words(demo, world_png):
    seen, text, status = demo.on_upload(str(world_png), demo.settings.encoder, False)
    assert seen.size == (DISPLAY_SIZE, DISPLAY_SIZE) and not status.startswith("error")
    assert_world_words(text)
    _, unique, _ = demo.on_upload(str(world_png), demo.settings.encoder, True)
    assert unique.split() == list(dict.fromkeys(unique.split())) and set(unique.split()) <= set(text.split())


def test_each_decoder_redraws_the_text(demo):
    _, text, _ = demo.on_example(0, demo.settings.encoder, False)
    gallery, status = demo.on_redraw(text, list(DECODERS))
    assert [name for _, name in gallery] == list(DECODERS) and "redrawn by" in status
    assert all(image.size == (DISPLAY_SIZE, DISPLAY_SIZE) for image, _ in gallery)
    first, second = (np.asarray(image, dtype=float) for image, _ in gallery)
    assert np.abs(first - second).mean() > 1  # two different models, two different drawings


def write_corrupt(path: Path) -> Path:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 20)
    return path


def write_huge(path: Path) -> Path:
    Image.new("RGB", (5000, 4000), "red").save(path)  # 20M pixels in a few kB of PNG
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (write_corrupt, "cannot read image"),
        (write_huge, "too large"),
        (lambda p: p.write_bytes(b"\0" * 300_000) and p, "upload limit"),
        (lambda p: p.write_bytes(b"") and p, "empty"),
    ],
    ids=["corrupt", "huge", "over-the-upload-limit", "empty"],
)
def test_bad_input_is_a_message_not_a_traceback(demo, tmp_path, make, message):
    path = make(tmp_path / "bad.png") or tmp_path / "bad.png"
    seen, text, status = demo.on_upload(str(path), demo.settings.encoder, False)
    assert seen is None and text is None
    assert status.startswith("error:") and message in status and "Traceback" not in status


def test_a_wrong_folder_or_no_choice_is_a_message(demo, tmp_path):
    _, _, status = demo.on_example(0, str(tmp_path), False)
    assert status.startswith("error:") and "model.safetensors" in status
    assert demo.on_redraw("red circle", [])[1].startswith("error: choose at least one decoder")
    assert demo.on_redraw("  ", list(DECODERS))[1].startswith("no text")
    assert demo.on_upload(None, demo.settings.encoder, False)[2].startswith("error: upload an image")


# ---- end to end in a real browser ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(demo):
    pytest.importorskip("gradio", reason="the web demo needs the serve extra (gradio)")
    from dediffusion.serve import build_app, launch

    app, port = build_app(demo), free_port()
    launch(app, port=port, max_upload_bytes=demo.settings.max_upload_bytes, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright")
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, served):
    """A fresh tab on the demo."""
    page = browser.new_page()
    page.set_default_timeout(120_000)  # two shared CPU cores: model steps can take a while
    page.goto(served)
    yield page
    page.close()


def upload(page, path: Path) -> None:
    page.locator("#upload input[type=file]").set_input_files(str(path))


def images_shown(page, count: int) -> list[bytes]:
    """Wait until the reconstructions gallery shows `count` loaded images; return their files."""
    page.wait_for_function(
        """n => { const images = [...document.querySelectorAll('#reconstructions img')];
                  return images.length === n && images.every(i => i.complete && i.naturalWidth > 0); }""",
        arg=count,
    )
    sources = page.locator("#reconstructions img").evaluate_all("images => images.map(i => i.src)")
    return [page.request.get(src).body() for src in sources]


def test_browser_upload_shows_text_and_each_decoders_redrawing(page, demo, world_png):
    upload(page, world_png)
    page.wait_for_function("() => (document.querySelector('#text textarea')?.value ?? '').trim().length > 0")
    text = page.locator("#text textarea").input_value()
    assert_world_words(text)
    shown = [Image.open(io.BytesIO(body)).convert("RGB") for body in images_shown(page, len(DECODERS))]
    expected = [image for image, _ in demo.redraw_all(text, DECODERS)]
    for got, want in zip(shown, expected):
        assert got.size == want.size
        assert np.abs(np.asarray(got, dtype=float) - np.asarray(want, dtype=float)).mean() < 2  # same drawing
    assert "redrawn by" in page.locator("#status").inner_text()


def test_browser_corrupt_upload_shows_a_clear_message(page, tmp_path):
    upload(page, write_corrupt(tmp_path / "broken.png"))
    page.wait_for_function("() => (document.querySelector('#status')?.innerText ?? '').includes('error')")
    status = page.locator("#status").inner_text()
    assert "cannot read image" in status and "Traceback" not in status


def test_serve_command_builds_the_demo_from_its_flags(monkeypatch):
    import dediffusion.serve as serve
    from dediffusion.cli import main

    seen = {}
    monkeypatch.setattr(serve.Demo, "warm_up", lambda self: seen.setdefault("settings", self.settings))
    monkeypatch.setattr(serve, "build_app", lambda demo: "app")
    monkeypatch.setattr(serve, "launch", lambda *args: seen.setdefault("launch", args))
    argv = ["serve", "--port", "8123", "--decoders", "bundled:decoder_b", "--max-upload-mb", "1"]
    assert main([*argv, "--num-inference-steps", "7"]) == 0
    settings = seen["settings"]
    assert settings.decoders == ("bundled:decoder_b",) and settings.num_inference_steps == 7
    assert seen["launch"] == ("app", "127.0.0.1", 8123, False, 2**20)  # local only, no share link
