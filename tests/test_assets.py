import pytest

from dediffusion.assets import ASSETS_DIR, resolve


def test_bundled_names_resolve_inside_the_package_and_other_paths_pass_through():
    assert resolve("bundled:perception") == str(ASSETS_DIR / "perception")
    assert resolve("some/folder") == "some/folder" and resolve("org/model-id") == "org/model-id"


def test_unknown_bundled_name_lists_what_is_available():
    with pytest.raises(FileNotFoundError, match="perception"):
        resolve("bundled:nope")


def test_the_bundle_holds_every_world_artifact_within_25_mb():
    folders = {p.name for p in ASSETS_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert {"perception", "decoder_a", "decoder_b", "world_encoder"} <= folders
    assert sum(f.stat().st_size for f in ASSETS_DIR.rglob("*") if f.is_file()) <= 25_000_000
