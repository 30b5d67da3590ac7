"""Question answering over a task's questions: the same scripted LLM answers better from more informative text."""

from dediffusion.eval.qa_suite import qa_items, qa_suite, score_answers
from dediffusion.world import QUESTION_KINDS, describe, questions, test_scenes
from dediffusion.world.evaluation import WorldTask


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

    def encode(self, images, unique_words=False):
        return ["red red" if not unique_words else "red"] * len(images)


def test_items_and_kinds_cover_every_question_of_every_scene():
    scenes = test_scenes(3)
    items, kinds = qa_items([questions(s) for s in scenes], [describe(s) for s in scenes])
    expected = [q for s in scenes for q in questions(s)]
    assert [i.question for i in items] == [q.question for q in expected]
    assert kinds == [q.kind for q in expected] and items[0].context == describe(scenes[0])


def test_the_world_task_gives_test_questions_and_examples_of_each_kind_in_turn():
    task = WorldTask()
    asked = task.qa_set(3, 32)
    assert asked.truths == test_scenes(3) and asked.questions == [questions(s) for s in test_scenes(3)]
    assert asked.reference_texts["description"] == [describe(s) for s in test_scenes(3)]
    examples = task.qa_examples(3, 32)
    assert examples.images.shape == (3, 3, 32, 32) and all(len(qs) == 1 for qs in examples.questions)
    assert [qs[0].kind for qs in examples.questions] == list(QUESTION_KINDS[:3])
    assert not set(map(repr, examples.truths)) & set(map(repr, test_scenes(200)))  # never test scenes
    assert len(task.qa_examples(0, 32).images) == 0


def test_score_answers_overall_and_per_kind():
    scenes = test_scenes(2)
    items, kinds = qa_items([questions(s) for s in scenes], [""] * 2)
    answers = [i.answer if k == "count" else "wrong" for i, k in zip(items, kinds)]
    result = score_answers(items, answers, kinds)
    assert result["by_kind"]["count"]["accuracy"] == 1.0 and result["by_kind"]["background"]["accuracy"] == 0.0
    assert result["accuracy"] == kinds.count("count") / len(kinds)


def test_the_description_beats_blind_and_blind_falls_back_to_the_first_choice():
    result = qa_suite(FixedTextModel(), WordMatcher(), WorldTask(), num_images=6, max_shots=2)
    zero = result["shots"]["0"]
    items, _ = qa_items([questions(s) for s in test_scenes(6)], [""] * 6)
    assert set(result["shots"]) == {"0", "2"} and result["num_questions"] == len(items)
    assert list(zero) == ["blind", "human", "De-Diffusion", "De-Diffusion, unique words", "description"]
    assert zero["description"]["accuracy"] > zero["human"]["accuracy"] > zero["blind"]["accuracy"]
    assert zero["blind"]["accuracy"] == sum(i.answer == i.choices[0] for i in items) / len(items)
    assert result["shots"]["2"]["description"]["accuracy"] == zero["description"]["accuracy"]
    assert zero["De-Diffusion"] == zero["De-Diffusion, unique words"]  # "red red" and "red" name the same words
