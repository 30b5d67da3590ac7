import pytest

from dediffusion.assets import ASSETS_DIR, resolve


def test_bundled_names_resolve_inside_the_package_and_other_paths_pass_through():
    assert resolve("bundled:perception") == str(ASSETS_DIR / "perception")
    assert resolve("some/folder") == "some/folder" and resolve("org/model-id") == "org/model-id"


def test_unknown_bundled_name_lists_what_is_available():
    with pytest.raises(FileNotFoundError, match="perception"):
        resolve("bundled:nope")
