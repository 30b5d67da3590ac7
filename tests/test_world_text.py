"""Descriptions and captions: true facts only, the closed vocabulary, the advertised rates."""

import numpy as np
import pytest

from dediffusion.world import (
    BACKGROUNDS,
    COLORS,
    SHAPES,
    SIZES,
    VOCABULARY,
    describe,
    human_caption,
    sample_caption,
)
from dediffusion.world import train_scenes as sample_train
from dediffusion.world.text import POSITION_PHRASES

PHRASE_TO_POSITION = {phrase: name for name, phrase in POSITION_PHRASES.items()}


def parse(text):
    """Mentions ``[{attribute: value}]`` and the background (or None) of a text."""
    background = None
    if text.endswith(" background"):
        head, _, tail = text.rpartition(" on a ") if " on a " in text else ("", "", text[2:])
        background = tail.removesuffix(" background")
        text = head
    mentions = []
    for phrase in text.split(" and ") if text else []:
        words = phrase.split()
        assert words[0] in ("a", "an"), phrase
        words, mention = words[1:], {}
        for name, values in (("size", SIZES), ("color", COLORS)):
            if words[0] in values:
                mention[name] = words.pop(0)
        noun = words.pop(0)
        if noun != "shape":
            mention["shape"] = noun
        if words:
            mention["position"] = PHRASE_TO_POSITION[" ".join(words)]
        mentions.append(mention)
    return mentions, background


def facts(obj):
    return {"size": obj.size, "color": obj.color, "shape": obj.shape, "position": obj.position}


def is_true(mention, scene):
    return any(mention.items() <= facts(obj).items() for obj in scene.objects)


SCENES = sample_train(400, seed=11)


def test_positions_have_phrases():
    assert set(POSITION_PHRASES) == set(PHRASE_TO_POSITION.values())


def test_describe_names_every_object_attribute_and_the_background():
    for scene in SCENES:
        mentions, background = parse(describe(scene))
        assert mentions == [facts(obj) for obj in scene.objects]
        assert background == scene.background


def test_describe_example():
    from dediffusion.world import Object, Scene

    scene = Scene("gray", (Object("circle", "red", "large", 0, 0), Object("square", "orange", "small", 1, 1)))
    expected = "a large red circle at the top left and a small orange square in the center on a gray background"
    assert describe(scene) == expected


def test_sample_caption_states_only_true_facts():
    rng = np.random.default_rng(0)
    lengths = set()
    for scene in SCENES:
        for _ in range(5):
            caption = sample_caption(scene, rng)
            mentions, background = parse(caption)
            assert all(is_true(m, scene) for m in mentions), caption
            assert background in (None, scene.background)
            assert len(mentions) <= len(scene.objects)
            lengths.add(len(mentions))
    assert lengths == {0, 1, 2, 3}


def test_sample_caption_rates_and_variety():
    rng = np.random.default_rng(1)
    scene = SCENES[0]
    captions = [sample_caption(scene, rng, p_empty=0.1, p_full=0.2) for _ in range(4000)]
    assert abs(captions.count("") / 4000 - 0.1) < 0.02
    assert abs(captions.count(describe(scene)) / 4000 - 0.9 * 0.2) < 0.03
    assert len(set(captions)) > 20
    assert all(c == "" for c in (sample_caption(scene, rng, p_empty=1.0) for _ in range(20)))
    with pytest.raises(ValueError):
        sample_caption(scene, rng, p_empty=1.5)


def test_sample_caption_is_deterministic_given_the_generator():
    first = [sample_caption(s, np.random.default_rng(5)) for s in SCENES[:50]]
    assert first == [sample_caption(s, np.random.default_rng(5)) for s in SCENES[:50]]


def test_sample_caption_shuffles_object_order():
    scene = next(s for s in SCENES if len(s.objects) == 3)
    rng = np.random.default_rng(2)
    orders = set()
    for _ in range(500):
        mentions, _ = parse(sample_caption(scene, rng, p_empty=0.0, p_full=0.0))
        if len(mentions) == 3 and all("position" in m for m in mentions):
            orders.add(tuple(m["position"] for m in mentions))
    assert len(orders) > 1


def test_human_caption_is_a_strict_subset_naming_salient_objects():
    for scene in SCENES:
        mentions, background = parse(human_caption(scene))
        assert background is None and 1 <= len(mentions) <= 2
        assert all(set(m) == {"color", "shape"} and is_true(m, scene) for m in mentions)
        if any(obj.size == "large" for obj in scene.objects):  # only large objects are named
            assert all(is_true({"size": "large", **m}, scene) for m in mentions)
        else:
            assert len(mentions) == 1


def test_all_texts_use_only_the_vocabulary():
    vocabulary = set(VOCABULARY)
    assert VOCABULARY == sorted(vocabulary)
    assert set(BACKGROUNDS) | set(SHAPES) <= vocabulary
    rng = np.random.default_rng(3)
    for scene in SCENES:
        texts = [describe(scene), human_caption(scene)] + [sample_caption(scene, rng) for _ in range(5)]
        for text in texts:
            assert set(text.split()) <= vocabulary, text
            assert text == text.lower() and "  " not in text


def test_loose_captions_are_shuffled_true_content_words():
    rng = np.random.default_rng(3)
    filler = {"a", "and", "the", "on", "shape"}
    orders = set()
    for scene in SCENES[:200]:
        true_words = {w for obj in scene.objects for w in (obj.size, obj.color, obj.shape, *obj.position.split())}
        true_words.add(scene.background)
        caption = sample_caption(scene, rng, p_empty=0.0, p_loose=1.0)
        words = caption.split()
        assert words and set(words) <= true_words | filler, caption
        assert "background" not in words and "at" not in words  # no phrases
        if len(scene.objects) == 1 and len(words) >= 3:
            orders.add(tuple(w for w in words if w not in filler)[:2])
    assert len(orders) > 20
    full = [sample_caption(SCENES[0], rng, p_empty=0.0, p_full=1.0, p_loose=1.0) for _ in range(20)]
    content = set(describe(SCENES[0]).split()) - filler - {"an", "at", "in", "background"}
    assert all(content <= set(c.split()) for c in full)  # a full loose caption names every fact
    assert len(set(full)) > 10
