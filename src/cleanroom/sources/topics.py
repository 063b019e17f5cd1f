"""A built-in list of school topics (no passages): ungrounded prompts when no corpus is installed."""

from __future__ import annotations

TOPICS: dict[str, list[str]] = {
    "mathematics": ["fractions", "prime numbers", "the Pythagorean theorem", "probability", "linear equations",
                    "area and perimeter", "percentages", "graphs of functions", "symmetry", "negative numbers"],
    "science": ["photosynthesis", "the water cycle", "volcanoes", "electric circuits", "the solar system",
                "states of matter", "food chains", "magnets", "the human heart", "weather and climate",
                "cells", "sound waves", "erosion", "simple machines", "the periodic table"],
    "history": ["the Roman Empire", "ancient Egypt", "the printing press", "the Industrial Revolution",
                "the Silk Road", "the first cities", "the invention of writing", "medieval castles"],
    "geography": ["rivers and deltas", "deserts", "mountains", "oceans", "maps and scale", "rainforests"],
    "everyday life": ["saving money", "cooking a healthy meal", "making friends", "sleep",
                      "recycling", "planning a trip", "first aid", "caring for a pet"],
    "language": ["writing a letter", "telling a story", "poetry", "learning a new language"],
    "technology": ["how computers store numbers", "the internet", "robots", "batteries", "bridges"],
}
