# The two commands of the README:
#   make tiny   set up (first time) and run the whole recipe on params/tiny.yaml -> outputs/tiny/
#   make test   set up (first time) and run the tests (notebooks executed on params/smoke.yaml)
# Other targets: make setup | make lab | make lab-check | make gpu-check | make smoke | make clean-outputs
#   make mutation   mutation testing of lib/{metrics,rl,answers,packing}.py (not in CI; docs/mutation.md)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# On our CPU machines torch==2.13.0 is a CPU build from local disk. Elsewhere set TORCH_SPEC
# (and PIP_EXTRA_INDEX_URL for a CPU or CUDA wheel index) before the first `make`.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup git-filter tiny smoke test lab lab-check gpu-check clean-outputs mutation

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"    # torch first: an unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name phi4mr --display-name "Python (phi4-mini-reasoning)" >/dev/null
	touch $@

setup: $(VENV)/.installed git-filter

# Notebooks are committed without outputs: git runs them through nbstripout (.gitattributes)
# when they are added, so running one in JupyterLab never dirties the repository. Cell ids are
# kept, and so is the "name" of language_info (the rest is what the Lab adds when it saves).
NBSTRIPOUT_KEYS := $(addprefix metadata.language_info.,codemirror_mode file_extension mimetype nbconvert_exporter pygments_lexer version)
# The index is refreshed first: in a fresh clone every entry is "racily clean" (written in the
# second the index was), so the first `git diff` would compare content, through the filter once
# installed, one nbstripout process per notebook (~8 s, paid by the first stage). Before the
# filter exists that comparison is a plain byte compare.
git-filter:
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  git update-index -q --refresh >/dev/null; \
	  $(PY) -m nbstripout --install --attributes .gitattributes && \
	  git config filter.nbstripout.clean '"$(abspath $(PY))" -m nbstripout --keep-id' && \
	  git config diff.ipynb.textconv '"$(abspath $(PY))" -m nbstripout --keep-id -t' && \
	  git config filter.nbstripout.extrakeys "$(NBSTRIPOUT_KEYS)"; \
	else echo "not a git checkout: no nbstripout filter installed"; fi

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

# The repository root, opened on notebooks/. PYTHONPATH: kernels (started in the notebook's
# folder) import this checkout's lib/ even when the environment is shared with another one.
lab: setup
	PYTHONPATH=$(CURDIR) $(VENV)/bin/jupyter lab --ServerApp.root_dir=$(CURDIR) \
	  --LabApp.default_url=/lab/tree/notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

# Every stage notebook run through the JupyterLab UI in headless Chromium on params/smoke.yaml
# (installs Debian's chromium and Playwright when missing; not part of `make test`).
lab-check: setup
	$(PY) tools/lab_check.py

# On a machine with a GPU: params/rehearsal.yaml on CUDA + benchmarks/bench_gpu.py, per-stage times.
gpu-check: setup
	$(PY) tools/gpu_check.py

clean-outputs:
	rm -rf outputs/
