import pytest
import torch

from dediffusion.eval.qa import QAItem, TransformersScorer, answer_questions, build_prompt, qa_accuracy

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
    assert prompt.index("Picture: a blue circle") < prompt.index("Answer: blue") < prompt.index("a green circle")
    assert prompt.endswith("Question: what color is the circle?\nAnswer:")
    assert "(no description)" in build_prompt("", "what color is the circle?")


def test_accuracy_refuses_questions_without_an_answer_key():
    with pytest.raises(ValueError, match="answer key"):
        qa_accuracy([QAItem("x", "q?", COLORS, None)], ["red"])


@pytest.fixture(scope="module")
def tiny_lm():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    words = ["<pad>", "Picture", ":", "Question", "Answer", "a", "red", "green", "blue", "circle", "?", "what"]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = GPT2TokenizerFast(tokenizer_object=raw, pad_token="<pad>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(words), n_embd=16, n_layer=1, n_head=2, n_positions=64))
    return TransformersScorer(model, tokenizer)


def test_transformers_scores_are_summed_token_logprobs_and_ignore_padding(tiny_lm):
    prompts = ["Picture : a red circle Question : what ? Answer :", "Answer :"]
    choices = [["red", "green circle"], ["blue"]]
    batch = tiny_lm.score(prompts, choices)
    alone = tiny_lm.score(prompts[1:], choices[1:])
    assert batch[1] == pytest.approx(alone[0], abs=1e-5)
    ids = tiny_lm.tokenizer(prompts[0] + " green circle").input_ids
    logprobs = torch.log_softmax(tiny_lm.model(torch.tensor([ids])).logits[0], -1)
    n = len(ids)
    expected = logprobs[n - 3, ids[n - 2]] + logprobs[n - 2, ids[n - 1]]
    assert batch[0][1] == pytest.approx(expected.item(), abs=1e-5)
