"""Prompt-set loaders on the real shared files and on small hand-made ones."""

from __future__ import annotations

import json

import pytest

from eval.prompts import load_prompts


def test_partiprompts_tsv(shared):
    path = shared / "prompts/PartiPrompts.tsv"
    allp = load_prompts(path)
    assert len(allp) == 1632 and allp[:2] == ["bond", "element"]
    animals = load_prompts(path, category="animals")
    assert len(animals) == 314 and set(animals) < set(allp)
    assert load_prompts(path, 5, category="Vehicles") == load_prompts(path, category="Vehicles")[:5]
    with pytest.raises(ValueError, match=r"no prompts in category 'Dogs'.*'Animals'"):
        load_prompts(path, category="Dogs")


def test_plain_text_files(shared):
    draw = load_prompts(shared / "prompts/DrawBench200.txt")
    assert len(draw) == 200 and draw[0] == "A red colored car."
    coco = load_prompts(shared / "prompts/COCO_caption_prompts_30k.txt", 1000)
    assert len(coco) == 1000 and coco[0] == "A man about to return a serve with his tennis racket"
    assert len(load_prompts(shared / "prompts/COCO_caption_prompts_30k.txt")) == 30003
    ir = load_prompts(shared / "prompts/ImageRewardPrompts.txt")
    assert len(ir) == 100 and ir[0] == "a concept art of a vehicle, cyberpunk"


def test_imagereward_json_and_errors(tmp_path):
    p = tmp_path / "bench.json"
    p.write_text(json.dumps([{"id": "1", "prompt": " a cat "}, {"prompt": "a dog"}]))
    assert load_prompts(p) == ["a cat", "a dog"]
    p.write_text(json.dumps({"prompts": ["x", "y", "z"]}))
    assert load_prompts(p, 2) == ["x", "y"]
    p.write_text(json.dumps([{"text": "no prompt key"}]))
    with pytest.raises(ValueError, match="item 0 has no 'prompt'"):
        load_prompts(p)
    with pytest.raises(FileNotFoundError, match="prompt file not found"):
        load_prompts(tmp_path / "missing.txt")
    (tmp_path / "e.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no prompts"):
        load_prompts(tmp_path / "e.txt")
    with pytest.raises(ValueError, match="--category filters PartiPrompts"):
        load_prompts(p, category="Animals")
    with pytest.raises(ValueError, match="--num-prompts must be >= 1"):
        load_prompts(tmp_path / "ok.txt", 0) if (tmp_path / "ok.txt").write_text("a\n") else None


def test_shapes_prompts():
    a = load_prompts("shapes:heldout", 5)
    assert len(a) == 5 and a == load_prompts("shapes:heldout", 5) and "background" in " ".join(a)
    with pytest.raises(ValueError, match="unknown shapes split"):
        load_prompts("shapes:test", 3)
