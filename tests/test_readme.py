"""Every command in README.md works: each `dediffusion ...` line parses with the real parser, and the cheap
ones run through `main([...])` as written plus a few flags that make them tiny (later flags win in argparse).
The Python example runs too. Commands are run in README order, in one working folder, so the files one
writes are there for the next."""

import re
import shlex
from pathlib import Path

import pytest
from test_pipelines import sdxl_dir, vocab_dir  # noqa: F401 (fixtures: a tiny SDXL pipeline folder)

from dediffusion.cli import build_parser, main

README = Path(__file__).parent.parent / "README.md"

# flags appended to a README command (by its command and first word after it) to make it run in seconds
TINY = {
    "world sample": ["-n", "4"],
    "encode": [],
    "reconstruct": ["--max-images", "2", "--num-inference-steps", "2"],
    "demo": ["-n", "2", "--num-inference-steps", "2"],
    "train": ["--set", "sleep.steps=0", "--set", "train.steps=1", "--set", "train.batch_size=2"]
    + ["--set", "train.sample_every=0", "--set", "encoder.image_size=32"],
}
NOT_RUN = {"ask", "evaluate", "serve"}  # an LLM package / minutes / a server: their flags are parsed, and
# test_cli and test_serve run them


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def readme_commands() -> list[list[str]]:
    """The argv of every `dediffusion` command in the README's bash blocks (after `&&` or `-m`), in order."""
    commands = []
    for block in code_blocks("bash"):
        for line in block.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part)
                if "dediffusion" in words and words[0] in ("dediffusion", "accelerate"):
                    commands.append(words[words.index("dediffusion") + 1 :])
    return commands


def kind(argv: list[str]) -> str:
    return " ".join(argv[:2]) if argv[0] == "world" else argv[0]


def test_the_readme_is_a_short_page_for_users():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    assert 'pip install torch==2.13.0 -e ".[dev]"' in text and "python -m pytest -q" in text
    assert (README.parent / "benchmarks/results/world_examples.png").is_file()


def test_the_readme_install_command_is_the_one_ci_runs():
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -q torch==2.13.0 -e ".[dev]"' in ci and "python -m pytest -q" in ci


def test_every_readme_command_parses():
    commands = readme_commands()
    assert {kind(c) for c in commands} >= {"encode", "reconstruct", "train", "evaluate", "demo", "world sample"}
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)  # exits (fails the test) on an unknown flag or a bad value


@pytest.fixture
def decoder_folder(micro_decoder_dir, sdxl_dir, tmp_path):  # noqa: F811
    """The README's placeholder paths, made real: a small diffusers folder, a tiny SDXL pipeline and a
    folder of the user's images."""
    (tmp_path / "path" / "to").mkdir(parents=True)
    (tmp_path / "path" / "to" / "diffusers-folder").symlink_to(micro_decoder_dir)
    (tmp_path / "path" / "to" / "sdxl-folder").symlink_to(sdxl_dir)
    return tmp_path


def test_the_readme_commands_run(decoder_folder, quadrant_folder, monkeypatch, capsys):
    monkeypatch.chdir(decoder_folder)
    (decoder_folder / "my-images").symlink_to(quadrant_folder)
    for argv in readme_commands():
        if kind(argv) in NOT_RUN:
            continue
        assert main([*argv, *TINY[kind(argv)]]) == 0, argv
    assert Path("texts.jsonl").is_file() and Path("reconstructions/grid.png").is_file()
    assert Path("runs/world/final").is_dir() and Path("runs/mine/final").is_dir()


def test_the_readme_python_example_runs(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["world", "sample", "-n", "1", "-o", "world-images/"]) == 0
    (example,) = code_blocks("python")
    exec(example.replace("num_inference_steps=25", "num_inference_steps=2"), {})
    assert capsys.readouterr().out.strip()
