import pytest

from dediffusion.eval.qa import (
    ExamplesFileError,
    QAItem,
    answer_freely,
    answer_questions,
    build_prompt,
    load_examples,
    qa_accuracy,
)

COLORS = ("red", "green", "blue")


class ScriptedScorer:
    """+5 for a choice named in the last picture line; +`bias` for 'red' whatever the context."""

    def __init__(self, bias: float):
        self.bias = bias
        self.prompts = []

    def score(self, prompts, choices):
        self.prompts += list(prompts)
        out = []
        for prompt, row in zip(prompts, choices):
            picture = prompt.rsplit("Picture:", 1)[1].split("\n", 1)[0].split()
            out.append([5.0 * (c in picture) + self.bias * (c == "red") for c in row])
        return out


def items(contexts, answers):
    return [QAItem(c, "what color is the circle?", COLORS, a) for c, a in zip(contexts, answers)]


def test_calibration_removes_a_context_free_preference():
    qa = items(["a green circle", "a blue circle", "a red circle"], ["green", "blue", "red"])
    biased = ScriptedScorer(bias=7.0)
    assert answer_questions(biased, qa, calibrate=False) == ["red", "red", "red"]
    biased.prompts.clear()
    assert answer_questions(biased, qa, calibrate=True) == ["green", "blue", "red"]
    assert sum("(no description)" in p for p in biased.prompts) == 1  # one prior per distinct question
    assert qa_accuracy(qa, answer_questions(biased, qa)) == 1.0


def test_context_decides_and_blind_questions_fall_back_to_the_prior():
    informed = items(["a green circle", "a blue circle"], ["green", "blue"])
    blind = items(["", ""], ["green", "blue"])
    scorer = ScriptedScorer(bias=1.0)
    assert qa_accuracy(informed, answer_questions(scorer, informed, calibrate=False)) == 1.0
    assert answer_questions(scorer, blind, calibrate=False) == ["red", "red"]


def test_few_shot_prompt_shows_solved_examples_before_the_question():
    shot = QAItem("a blue circle", "what color is the circle?", COLORS, "blue")
    prompt = build_prompt("a green circle", "what color is the circle?", [shot])
    solved = prompt.index("Answer (one word): blue")
    assert prompt.index("Picture: a blue circle") < solved < prompt.index("a green circle")
    assert prompt.endswith("Question: what color is the circle?\nAnswer (one word):")
    assert "(no description)" in build_prompt("", "what color is the circle?")


def test_accuracy_refuses_questions_without_an_answer_key():
    with pytest.raises(ValueError, match="answer key"):
        qa_accuracy([QAItem("x", "q?", COLORS, None)], ["red"])


class ScriptedGenerator:
    """Records its prompt and stop strings and answers with padding around a word and a second line."""

    def __init__(self):
        self.calls = []

    def generate(self, prompt, max_new_tokens=32, stop=()):
        self.calls.append((prompt, max_new_tokens, tuple(stop)))
        text = " green \nQuestion: more"
        return text.split("\n")[0] if "\n" in stop else text


def test_free_answer_is_the_first_line_of_greedy_text_after_the_prompt():
    lm = ScriptedGenerator()
    assert answer_freely(lm, "a green circle", "what color is the circle?") == "green"
    prompt, _, stop = lm.calls[0]
    assert prompt == build_prompt("a green circle", "what color is the circle?") and "\n" in stop


def test_examples_file_gives_solved_items_and_names_a_bad_line(tmp_path):
    path = tmp_path / "shots.jsonl"
    path.write_text('{"context": "a blue circle", "question": "what color is the circle?", "answer": "blue"}\n\n')
    assert load_examples(path) == [QAItem("a blue circle", "what color is the circle?", (), "blue")]
    path.write_text('{"context": "a blue circle", "answer": "blue"}\n')
    with pytest.raises(ExamplesFileError, match="shots.jsonl:1"):
        load_examples(path)
