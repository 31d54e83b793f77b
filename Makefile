# The two commands of the README:
#   make tiny   set up (first time) and run the whole recipe on params/tiny.yaml -> outputs/tiny/
#   make test   set up (first time) and run the tests (notebooks executed on params/smoke.yaml)
# Other targets: make setup | make lab | make smoke | make clean-outputs
#   make mutation   mutation testing of lib/{metrics,rl,answers,packing}.py (not in CI; docs/mutation.md)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# On our CPU machines torch==2.13.0 is a CPU build from local disk. Elsewhere set TORCH_SPEC
# (and PIP_EXTRA_INDEX_URL for a CPU or CUDA wheel index) before the first `make`.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup tiny smoke test lab clean-outputs mutation

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"    # torch first: an unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name phi4mr --display-name "Python (phi4-mini-reasoning)" >/dev/null
	touch $@

setup: $(VENV)/.installed

tiny: setup
	$(PY) -m lib.recipe params/tiny.yaml

smoke: setup
	$(PY) -m lib.recipe params/smoke.yaml

test: setup
	$(PY) -m pytest -q

# mutmut is a tool of this target only (not a dependency of the package): installed on first use.
MUTATION_MODULES ?= metrics rl answers packing
mutation: setup
	$(PY) -c "import mutmut" 2>/dev/null || $(PY) -m pip install -q "mutmut==3.8.*"
	nice -n 19 $(PY) tools/mutation.py $(MUTATION_MODULES)

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean-outputs:
	rm -rf outputs/
