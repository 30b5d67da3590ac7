"""World question answering: the same scripted LLM answers better from more informative text."""

from dediffusion.eval.world_qa import few_shot_examples, qa_items, score_answers, world_qa
from dediffusion.world import QUESTION_KINDS, describe, questions, test_scenes, train_scenes


class WordMatcher:
    """A scripted LLM: a choice scores 1 if it is a word of the last picture line of the prompt."""

    def score(self, prompts, choices):
        rows = []
        for prompt, row in zip(prompts, choices):
            picture = prompt.rsplit("Picture:", 1)[-1].split("\n", 1)[0].split()
            rows.append([float(c in picture) for c in row])
        return rows


class FixedTextModel:
    """Stands in for a De-Diffusion model that writes the same text for every image."""

    class decoder:
        resolution = 32

    def encode(self, images):
        return ["red"] * len(images)


def test_items_and_kinds_cover_every_question_of_every_scene():
    scenes = test_scenes(3)
    items, kinds = qa_items(scenes, [describe(s) for s in scenes])
    expected = [q for s in scenes for q in questions(s)]
    assert [i.question for i in items] == [q.question for q in expected]
    assert kinds == [q.kind for q in expected] and items[0].context == describe(scenes[0])


def test_few_shot_examples_take_question_kinds_in_turn():
    scenes = train_scenes(4, seed=7)
    examples = few_shot_examples(scenes, ["text"] * 4, 3)
    assert len(examples) == 3 and all(e.answer in e.choices for e in examples)
    kinds = [next(q.kind for q in questions(s) if q.question == e.question) for s, e in zip(scenes, examples)]
    assert kinds == list(QUESTION_KINDS[:3])


def test_score_answers_overall_and_per_kind():
    scenes = test_scenes(2)
    items, kinds = qa_items(scenes, [""] * 2)
    answers = [i.answer if k == "count" else "wrong" for i, k in zip(items, kinds)]
    result = score_answers(items, answers, kinds)
    assert result["by_kind"]["count"]["accuracy"] == 1.0 and result["by_kind"]["background"]["accuracy"] == 0.0
    assert result["accuracy"] == kinds.count("count") / len(kinds)


def test_the_description_beats_blind_and_blind_falls_back_to_the_first_choice():
    result = world_qa(FixedTextModel(), WordMatcher(), num_scenes=6, max_shots=2)
    zero = result["shots"]["0"]
    assert set(result["shots"]) == {"0", "2"} and result["num_questions"] == len(qa_items(test_scenes(6), [""] * 6)[0])
    assert zero["description"]["accuracy"] > zero["human"]["accuracy"] > zero["blind"]["accuracy"]
    items, _ = qa_items(test_scenes(6), [""] * 6)
    assert zero["blind"]["accuracy"] == sum(i.answer == i.choices[0] for i in items) / len(items)
    assert result["shots"]["2"]["description"]["accuracy"] == zero["description"]["accuracy"]
