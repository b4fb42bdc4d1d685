# Two commands do all the set-up on a fresh Debian/Ubuntu machine with Python 3.11.5+ (requirements.lock needs it):
#   make repro   create .venv, get the data, run the whole pipeline (dvc repro)
#                PROFILE=<name> first sets base.profile in params.yaml (validated; that line only),
#                e.g. `make repro PROFILE=gpu CONFIRM=1`; without it the profile in params.yaml runs.
#                Another profile than the one in params.yaml reruns every stage and overwrites the
#                committed results (models/, results/, figures/, README tables, dvc.lock): make first
#                says so and how long it takes (scripts/repro_notice.py), and goes on only with
#                CONFIRM=1 or a `y` typed at its prompt (no terminal, no CONFIRM=1: it stops, nothing changed);
#                NPROC=<n> trains data-parallel on n GPUs (e.g. `make repro PROFILE=gpu NPROC=4`)
#   make smoke   every kind of stage on three models (~4 min on 2 cores) into runs/smoke/ (git-ignored):
#                the committed results, figures, README and dvc.lock stay as they are (bcos_lib/smoke.py)
#   make test    create .venv, get the data, run the whole test suite (pytest + nbval)
#   make book    the static HTML site (build/book/html/index.html) of the README, docs/, the executed
#                notebooks of the last `make repro` and the tutorials (executed once by `make tutorials`)
PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?=
CONFIRM ?=
# NPROC=<n>: each training stage runs data-parallel on n processes (torchrun; one GPU each, NCCL)
NPROC   ?=
ifneq ($(strip $(NPROC)),)
export BCOS_NPROC := $(NPROC)
endif
BIN     := $(abspath $(VENV))/bin
# the installer of the set-up (a pinned version, like every package of requirements.lock)
UV_PIN  := uv==0.13.9
# dvc runs papermill and python from the stage commands: they must be the venv's
export PATH := $(BIN):$(PATH)
export PYTHONHASHSEED := 0

.PHONY: setup data repro smoke test test-fast lab bench clean-runs check-env dvc.yaml tutorials book browser

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# uv installs the lock's ~280 packages in parallel (torch's 5.5 GB in seconds from its cache); pip if uv fails
	$(BIN)/python -m pip install --quiet $(UV_PIN) && $(BIN)/uv pip install --python $(BIN)/python --quiet -r requirements.lock \
	  || $(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (bcos-companion)" >/dev/null
	touch $@

# The embedded data: Debian's dataset-fashion-mnist when it can be installed (root), else a download.
data: setup
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing the Debian package dataset-fashion-mnist"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	fi
	$(BIN)/python -m bcos_lib.core.data fetch

# headless Chromium for the book's browser test: Debian's chromium and chromium-driver when they can be
# installed (root), as for the data; as another user tests/test_book.py skips its browser checks without them
browser:
	@if ! command -v chromedriver >/dev/null && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing the Debian packages chromium and chromium-driver (the book's browser test)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

# with PROFILE, dvc.yaml is written again once the profile is set: a profile may train more seed replicas
# (a replica is an output of its model's stages)
repro: data dvc.yaml
ifneq ($(strip $(PROFILE)),)
	$(BIN)/python scripts/repro_notice.py $(PROFILE) --confirm "$(CONFIRM)"
	$(BIN)/python -m bcos_lib.core.config --set-profile $(PROFILE)
	$(BIN)/python -m bcos_lib.dvcgen
endif
	$(BIN)/dvc repro

smoke: data
	$(BIN)/python -m bcos_lib.smoke $(SMOKE_ARGS)

# dvc.yaml is generated from params.yaml (models) and the stage code's imports
dvc.yaml: setup
	$(BIN)/python -m bcos_lib.dvcgen

# the unit tests in parallel, then every notebook in order under nbval (30_explain needs 20_train's models)
test: data browser
	$(BIN)/python -m pytest -n 2 --durations=30 tests
	$(BIN)/python -m pytest -p no:xdist --nbval-lax --durations=10 notebooks

test-fast: setup
	$(BIN)/python -m pytest -n 2 tests -m "not slow"

# JupyterLab on the notebooks for root and non-root alike; prints the URL with its token
# (no browser on a headless machine). Options: scripts/lab.py, e.g. make lab LAB_ARGS="--port 9999"
lab: data
	$(BIN)/python scripts/lab.py $(LAB_ARGS)

# the price of interpretability, ratios measured side by side in one process (results/bench.json);
# scripts/bench_evaluate.py is the grid evaluation's own, longer benchmark
bench: setup
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

# each tutorial executed once into results/tutorials/ (again only when its notebook changed);
# the book shows these outputs and executes nothing itself
TUTORIALS := $(wildcard notebooks/tutorials/[0-9]*.ipynb)
tutorials: $(patsubst notebooks/tutorials/%,results/tutorials/%,$(TUTORIALS))

results/tutorials/%.ipynb: notebooks/tutorials/%.ipynb | data
	@mkdir -p results/tutorials
	$(BIN)/papermill --cwd notebooks/tutorials -k python3 --no-progress-bar $< $@.part
	mv $@.part $@

# the book: build/book/html/index.html (offline: Sphinx + MyST-NB + sphinx-book-theme); BOOK_ARGS, e.g.
# BOOK_ARGS="--n-images 8": see python -m bcos_lib.book --help
book: tutorials
	$(BIN)/python -m bcos_lib.book $(BOOK_ARGS)

check-env: setup
	$(BIN)/python scripts/sync_environment.py --check

clean-runs:
	rm -rf runs checkpoints
