"""The README's "Bring your own data" recipes run as written on user-style folders and learn."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
pytestmark = pytest.mark.usefixtures("one_thread")


def recipe(name: str) -> str:
    match = re.search(rf"<!-- recipe: {name} -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, f"README has no recipe {name!r}"
    return match.group(1)


def run_recipe(name: str, folder: Path) -> dict:
    scope: dict = {"FOLDER": folder}
    exec(compile(recipe(name), f"README.md:{name}", "exec"), scope)
    return scope


def test_products_image_and_title(tmp_path: Path) -> None:
    from userdata import write_products

    out = run_recipe("products", write_products(tmp_path))
    assert len(out["classes"]) == 8
    assert out["products_accuracy"] > 0.8  # chance 1/8; 30% of titles say nothing, the image covers them
    assert out["products_accuracy"] > out["title_only_accuracy"] + 0.1


def test_retrieval_on_own_photos(tmp_path: Path) -> None:
    from userdata import write_caption_folder

    write_caption_folder(tmp_path / "photos", layout="captions")
    out = run_recipe("retrieval", tmp_path)
    t2i = out["retrieval"]["t2i"]
    assert t2i["R@5"] > 0.8 and t2i["R@1"] > 0.3  # 7 test photos: chance R@1 1/7, R@5 5/7


def test_spoken_commands_unseen_voice(tmp_path: Path) -> None:
    from userdata import write_commands

    write_commands(tmp_path / "commands")
    out = run_recipe("commands", tmp_path)
    assert out["vocabulary"] == ["down", "left", "no", "right", "up", "yes"]
    assert out["commands_accuracy"] > 0.7  # chance 1/6, on a voice held out of training
