"""Questions: answers follow from the scene graph, referents are unique, yes/no is balanced."""

import re
from collections import Counter

from dediffusion.world import CHOICES, QUESTION_KINDS, QUESTION_VOCABULARY, questions
from dediffusion.world import train_scenes as sample_train
from dediffusion.world.text import POSITION_PHRASES

PHRASE_TO_POSITION = {phrase: name for name, phrase in POSITION_PHRASES.items()}
SCENES = sample_train(500, seed=21)


def _matching(scene, **attributes):
    return [o for o in scene.objects if all(getattr(o, k) == v for k, v in attributes.items())]


def _check(question, scene):
    text, answer = question.question, question.answer
    if question.kind == "count":
        return answer == ("one", "two", "three")[len(scene.objects) - 1]
    if question.kind == "background":
        return answer == scene.background
    if match := re.fullmatch(r"what shape is (.+)\?", text):
        (obj,) = [o for o in scene.objects if o.position == PHRASE_TO_POSITION[match[1]]]
        return answer == obj.shape
    if match := re.fullmatch(r"what color is the (\w+)\?", text):
        (obj,) = _matching(scene, shape=match[1])
        return answer == obj.color
    if match := re.fullmatch(r"what size is the (\w+) (\w+)\?", text):
        (obj,) = _matching(scene, color=match[1], shape=match[2])
        return answer == obj.size
    if match := re.fullmatch(r"where is the (\w+) (\w+)\?", text):
        (obj,) = _matching(scene, color=match[1], shape=match[2])
        return answer == obj.position
    match = re.fullmatch(r"is there an? (\w+) (\w+)\?", text)
    return answer == ("yes" if _matching(scene, color=match[1], shape=match[2]) else "no")


def test_answers_follow_from_the_scene_graph_and_referents_are_unique():
    kinds = Counter()
    for scene in SCENES:
        for question in questions(scene):
            assert question.kind in QUESTION_KINDS
            assert question.choices == CHOICES[question.kind] and question.answer in question.choices
            assert _check(question, scene), (question, scene)  # unpacking (obj,) enforces uniqueness
            kinds[question.kind] += 1
    assert set(kinds) == set(QUESTION_KINDS)


def test_no_question_is_asked_twice_and_questions_are_deterministic():
    for scene in SCENES[:100]:
        asked = questions(scene)
        assert len({q.question for q in asked}) == len(asked)
        assert questions(scene) == asked


def test_yes_no_is_balanced():
    answers = Counter()
    for scene in SCENES:
        per_scene = Counter(q.answer for q in questions(scene) if q.kind == "exists")
        assert per_scene["yes"] == per_scene["no"] > 0
        answers.update(per_scene)
    assert answers["yes"] == answers["no"]


def test_ambiguous_referents_are_not_asked():
    scene = next(s for s in SCENES if len({o.shape for o in s.objects}) < len(s.objects))
    shared = Counter(o.shape for o in scene.objects).most_common(1)[0][0]
    assert f"what color is the {shared}?" not in {q.question for q in questions(scene)}


def test_questions_use_only_the_question_vocabulary():
    vocabulary = set(QUESTION_VOCABULARY)
    for scene in SCENES:
        for q in questions(scene):
            assert set(q.question.rstrip("?").split()) | set(q.answer.split()) <= vocabulary
