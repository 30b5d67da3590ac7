"""Scene accuracy on hand-made scene graphs with known answers."""

from dataclasses import replace

import pytest

from dediffusion.world import Object, Scene
from dediffusion.world.scoring import (
    accuracy_by_kind,
    count_facts,
    fact_accuracy,
    fact_precision,
    objects_per_image,
    scene_accuracy,
    scene_facts,
)

RED_CIRCLE = Object("circle", "red", "small", row=0, col=0, dx=0.05, shade=-0.1)
BLUE_SQUARE = Object("square", "blue", "large", row=1, col=1)
TRUE = Scene("gray", (RED_CIRCLE, BLUE_SQUARE))  # 1 + 2 * 4 = 9 facts


def _as_dict(background, *objects):
    return {"background": background, "objects": [dict(o) for o in objects]}


def test_facts_name_background_and_every_attribute_at_its_position():
    assert scene_facts(TRUE) == {
        ("background", "gray"),
        ("position", "top left"),
        ("shape", "top left", "circle"),
        ("color", "top left", "red"),
        ("size", "top left", "small"),
        ("position", "center"),
        ("shape", "center", "square"),
        ("color", "center", "blue"),
        ("size", "center", "large"),
    }


def test_identical_scenes_score_one_and_jitter_is_ignored():
    jittered = Scene("gray", (replace(RED_CIRCLE, dx=-0.07, scale=1.05), BLUE_SQUARE), 0.04)
    assert fact_accuracy(TRUE, TRUE) == 1.0
    assert fact_accuracy(TRUE, jittered) == 1.0
    assert fact_precision(TRUE, jittered) == 1.0


def test_one_wrong_colour_loses_exactly_one_fact():
    predicted = Scene("gray", (replace(RED_CIRCLE, color="green"), BLUE_SQUARE))
    assert fact_accuracy(TRUE, predicted) == pytest.approx(8 / 9)
    assert count_facts(TRUE, predicted)["color"] == (1, 2)


def test_missing_object_loses_its_four_facts():
    predicted = Scene("gray", (BLUE_SQUARE,))
    assert fact_accuracy(TRUE, predicted) == pytest.approx(5 / 9)
    assert fact_precision(TRUE, predicted) == 1.0


def test_hallucinated_object_counts_as_one_wrong_fact():
    extra = Object("cross", "white", "small", row=2, col=2)
    predicted = Scene("gray", (RED_CIRCLE, BLUE_SQUARE, extra))
    assert fact_accuracy(TRUE, predicted) == pytest.approx(9 / 10)
    assert fact_precision(TRUE, predicted) == pytest.approx(9 / 13)
    assert count_facts(TRUE, predicted)["position"] == (2, 3)


def test_object_one_cell_off_is_a_miss_plus_a_hallucination():
    predicted = Scene("gray", (replace(RED_CIRCLE, col=1), replace(BLUE_SQUARE, row=2)))
    assert fact_accuracy(TRUE, predicted) == pytest.approx(1 / 11)


def test_wrong_background_loses_one_fact():
    predicted = {"background": "beige", "objects": [RED_CIRCLE, BLUE_SQUARE]}
    assert fact_accuracy(TRUE, predicted) == pytest.approx(8 / 9)
    assert count_facts(TRUE, predicted)["background"] == (0, 1)


def test_dicts_work_like_scenes_even_when_they_break_scene_invariants():
    assert fact_accuracy(TRUE.to_dict(), TRUE) == 1.0
    empty = {"background": "gray", "objects": []}  # a Scene needs 1-3 objects; a prediction need not
    assert fact_accuracy(TRUE, empty) == pytest.approx(1 / 9)
    white_on_beige = _as_dict("beige", {"shape": "circle", "color": "white", "size": "small", "row": 0, "col": 0})
    assert fact_accuracy(Scene("beige", (replace(RED_CIRCLE, color="black"),)), white_on_beige) == 0.8


def test_bad_dicts_raise_clear_errors():
    with pytest.raises(ValueError, match="lacks 'row'"):
        scene_facts({"background": "gray", "objects": [{"shape": "circle", "color": "red", "size": "small"}]})
    twice = {"shape": "circle", "color": "red", "size": "small", "row": 0, "col": 0}
    with pytest.raises(ValueError, match="two objects"):
        scene_facts(_as_dict("gray", twice, twice))
    with pytest.raises(ValueError, match="outside"):
        scene_facts(_as_dict("gray", {**twice, "row": 3}))


def test_scene_accuracy_is_the_mean_and_by_kind_pools_counts():
    wrong_colour = Scene("gray", (replace(RED_CIRCLE, color="green"), BLUE_SQUARE))
    one_object = Scene("pink", (RED_CIRCLE,))  # 5 facts
    assert scene_accuracy([TRUE, one_object], [wrong_colour, one_object]) == pytest.approx((8 / 9 + 1) / 2)
    by_kind = accuracy_by_kind([TRUE, one_object], [wrong_colour, one_object])
    assert by_kind["color"] == pytest.approx(2 / 3)
    assert by_kind["all"] == pytest.approx(13 / 14)
    assert by_kind["background"] == by_kind["shape"] == 1.0
    with pytest.raises(ValueError, match="equally many"):
        scene_accuracy([TRUE], [])


def test_by_kind_is_none_for_a_kind_with_nothing_to_count():
    bare = {"background": "gray", "objects": []}  # a user's scene graph may hold no object
    by_kind = accuracy_by_kind([bare], [bare])
    assert by_kind["background"] == by_kind["all"] == 1.0
    assert by_kind["shape"] is None and by_kind["position"] is None


def test_objects_per_image_counts_scenes_and_predicted_dicts_alike():
    red = {"shape": "circle", "color": "red", "size": "small", "row": 0, "col": 0}
    crowded = _as_dict("gray", red, red, {**red, "col": 1})  # a reading may put two objects in one cell
    assert objects_per_image([TRUE, Scene("pink", (RED_CIRCLE,)), crowded]) == pytest.approx((2 + 1 + 3) / 3)
    assert objects_per_image([{"background": "gray", "objects": []}]) == 0.0
    with pytest.raises(ValueError, match="at least one scene"):
        objects_per_image([])
