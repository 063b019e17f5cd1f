"""The prompt builder for real teachers, in the manner of Phi, Cosmopedia and TinyStories.

A prompt is a combination of components, each drawn with a seeded RNG:
  topic (from a seed source, optionally with its passage) x audience x format x optional persona
  x optional TinyStories-style required words and story features.
Cosmopedia found that varying audience and format is what keeps millions of generations from
collapsing onto the same few openings; TinyStories forced diversity by requiring random words and
features in every story; grounding a weak teacher on a real passage (Cosmopedia's web extracts)
keeps it from inventing facts. `PromptBuilder.spec(i)` is a pure function of (seed, i), so a resumed
run rebuilds exactly the same prompts and finds their completions in the request cache.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from cleanroom.sources import Seed

AUDIENCES: dict[str, str] = {
    "young_children": "young children (ages 5 to 8); use very simple words and short sentences",
    "high_school": "high school students; explain terms when they first appear",
    "college": "college students; be precise and go into some depth",
    "researchers": "researchers and experts; be rigorous and concise",
}

FORMATS: dict[str, str] = {
    "textbook": "Write a section of a textbook about {topic}. Give it a title, explain the key ideas in "
                "short paragraphs, and include one concrete example.",
    "exercises": "Write three exercises about {topic}, each followed by a worked solution. Label them "
                 "\"Exercise 1:\", \"Exercise 2:\" and \"Exercise 3:\", and start each solution with "
                 "\"Solution:\".",
    "story": "Write a short story in which the characters learn something about {topic}.",
    "qa": "Write a question-and-answer session about {topic}: four questions a curious reader would ask, "
          "each followed by a clear answer. Start questions with \"Q:\" and answers with \"A:\".",
    "blog": "Write a blog post about {topic} with a catchy title and a personal, engaging tone.",
}

PERSONAS = [
    "a retired ship captain", "a patient primary-school teacher", "a curious museum guide",
    "a farmer who loves science", "a young engineer", "a grandmother telling stories", "a sports coach",
    "a librarian", "a nurse on a night shift", "a travelling musician", "a park ranger", "a baker",
    "a chess player", "a software developer", "a historian", "a mountain guide",
]

# TinyStories drew one verb, one noun and one adjective from ~1500 basic words per story.
WORDS = {
    "verb": ["jump", "build", "share", "search", "climb", "listen", "fix", "explore", "count", "grow", "paint",
             "whisper", "carry", "discover", "measure", "wonder", "float", "borrow", "plant", "fold"],
    "noun": ["lantern", "river", "kite", "garden", "map", "ladder", "clock", "bridge", "shell", "window",
             "basket", "compass", "drum", "feather", "island", "mirror", "puzzle", "rocket", "seed", "tower"],
    "adjective": ["brave", "tiny", "shiny", "quiet", "curious", "gentle", "wobbly", "bright", "clever",
                  "ancient", "sticky", "hollow", "proud", "fuzzy", "calm", "steep", "golden", "busy"],
}
FEATURES = ["a dialogue", "a plot twist", "a moral lesson", "foreshadowing", "a happy ending",
            "a conflict that gets resolved", "a surprising fact", "a comparison with everyday life"]


@dataclass(frozen=True)
class RecipePrompts:
    """Which components a recipe draws from."""

    formats: tuple[str, ...]
    audiences: tuple[str, ...] = tuple(AUDIENCES)
    persona_prob: float = 0.0
    words_prob: float = 0.0  # chance of TinyStories required words
    features_prob: float = 0.0
    default_source: str = "wikipedia"


RECIPES: dict[str, RecipePrompts] = {
    # Phi-style: expository sections and exercises with worked solutions
    "textbook": RecipePrompts(formats=("textbook", "exercises"), words_prob=0.2),
    # TinyStories: stories for young children with required words and features
    "tinystories": RecipePrompts(formats=("story",), audiences=("young_children",), words_prob=1.0,
                                 features_prob=1.0, default_source="topics"),
    # Cosmopedia: every format, every audience, personas
    "cosmopedia": RecipePrompts(formats=tuple(FORMATS), persona_prob=0.5, words_prob=0.2, features_prob=0.2),
}


@dataclass
class PromptSpec:
    """One prompt and the components it was built from (stored in the document's `meta`)."""

    index: int
    recipe: str
    topic: str
    source: str
    category: str
    audience: str
    format: str
    persona: str | None = None
    required_words: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    passage: str = ""
    text: str = ""

    @property
    def grounded(self) -> bool:
        return bool(self.passage)

    def components(self) -> dict:
        d = asdict(self)
        d.pop("text")
        return d


class PromptBuilder:
    """Deterministic prompts for one recipe over a list of seeds."""

    def __init__(self, recipe: str, seeds: list[Seed], seed: int = 0, *, ground: bool = True,
                 max_passage_words: int = 160):
        if recipe not in RECIPES:
            raise ValueError(f"unknown prompt recipe `{recipe}` (choose {', '.join(RECIPES)})")
        if not seeds:
            raise ValueError("the seed source is empty: no topics to write about")
        self.recipe, self.cfg, self.seeds, self.seed = recipe, RECIPES[recipe], seeds, seed
        self.ground, self.max_passage_words = ground, max_passage_words
        # topics in a seeded order without repetition until every seed was used once
        self._order = np.random.default_rng([seed, 0x70]).permutation(len(seeds))

    def spec(self, i: int) -> PromptSpec:
        rng = np.random.default_rng([self.seed, 0x5EED, i])
        s = self.seeds[int(self._order[i % len(self.seeds)])]
        c = self.cfg
        spec = PromptSpec(
            index=i, recipe=self.recipe, topic=s.title, source=s.source, category=s.category,
            audience=str(rng.choice(c.audiences)), format=str(rng.choice(c.formats)),
            passage=_clip(s.passage, self.max_passage_words) if self.ground else "",
        )
        if rng.random() < c.persona_prob:
            spec.persona = str(rng.choice(PERSONAS))
        if rng.random() < c.words_prob:
            spec.required_words = [str(rng.choice(WORDS[k])) for k in ("verb", "noun", "adjective")]
        if rng.random() < c.features_prob:
            k = int(rng.integers(1, 3))
            spec.features = [str(f) for f in rng.choice(FEATURES, size=k, replace=False)]
        spec.text = render(spec)
        return spec

    def specs(self, start: int, stop: int) -> list[PromptSpec]:
        return [self.spec(i) for i in range(start, stop)]


def render(spec: PromptSpec) -> str:
    """The prompt text: optional passage block, then the instruction built from the components."""
    parts = []
    if spec.passage:
        parts.append(f'Source passage about "{spec.topic}":\n"""\n{spec.passage}\n"""\n')
    parts.append(FORMATS[spec.format].format(topic=f'"{spec.topic}"'))
    parts.append(f"The readers are {AUDIENCES[spec.audience]}.")
    if spec.persona:
        parts.append(f"Write in the voice of {spec.persona}.")
    if spec.passage:
        parts.append("Use the facts in the source passage and do not invent names, dates or numbers.")
    if spec.required_words:
        words = ", ".join(f'"{w}"' for w in spec.required_words)
        parts.append(f"Use the words {words} somewhere in the text.")
    if spec.features:
        parts.append(f"The text should contain {' and '.join(spec.features)}.")
    parts.append("Start directly with the text; do not mention these instructions.")
    return parts[0] + "\n" + " ".join(parts[1:]) if spec.passage else " ".join(parts)


def _clip(text: str, max_words: int) -> str:
    """At most `max_words` words, cut at a sentence end when one is reasonably near."""
    words = text.split()
    if len(words) <= max_words:
        return text
    cut = " ".join(words[:max_words])
    end = cut.rfind(". ")
    return cut[: end + 1] if end > len(cut) // 2 else cut + " ..."
