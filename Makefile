# Two commands do all the set-up on a fresh machine:
#   make demo   environment + synthetic VOC data + .rec + train a small SSD on CPU + mAP + pictures
#   make test   environment + the whole test suite (what CI runs)
#   make photos environment + labelled photos -> trained detector + mAP + report + pictures:
#               with no PHOTOS=, the public raccoon sample set (downloaded once into data/,
#               checked file by file); PHOTOS=folder trains on your own folder in any common
#               export layout (README "Your photos"). SAMPLE_URL= points the download elsewhere.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEMO   ?= output/demo
PHOTOS ?=
SAMPLE_URL ?=
# Python versions the project runs on (tested: 3.11, 3.12, 3.13). The check below is plain
# enough for any Python that might answer to $(PYTHON), 2.7 included.
MIN_PY := 3.9
MAX_PY := 3.13
CHECK_PY := import sys; v = tuple(sys.version_info[:2]); version = lambda s: tuple(map(int, s.split("."))); \
	ok = version("$(MIN_PY)") <= v <= version("$(MAX_PY)"); \
	sys.exit(0 if ok else "error: $(PYTHON) is Python %d.%d; this project needs Python \
	$(MIN_PY)-$(MAX_PY) (tested: 3.11, 3.12, 3.13): pass one, e.g. make demo PYTHON=python3.12" % v)
# One stamp per interpreter version: passing another PYTHON rebuilds the environment.
PYVER  := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
STAMP  := $(VENV)/.installed-py$(PYVER)

.PHONY: venv check-python demo photos test test-fast clean

venv: $(STAMP)

check-python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: no $(PYTHON) on PATH; this \
	project needs Python $(MIN_PY)-$(MAX_PY): pass one, e.g. make demo PYTHON=python3.12" >&2; exit 1; }
	@$(PYTHON) -c '$(CHECK_PY)'

$(STAMP): requirements.txt | check-python
	@if [ -x $(PY) ] && [ "$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$(PYVER)" ]; then \
		echo "$(VENV) was made by another Python: making it anew with $(PYTHON) ($(PYVER))"; \
		rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed*
	touch $@

demo: venv
	MPLBACKEND=Agg $(PY) -m tools.run_demo --workdir $(DEMO)

photos: venv
	MPLBACKEND=Agg $(PY) tools/train_photos.py $(if $(PHOTOS),$(PHOTOS),--sample raccoon \
		$(if $(SAMPLE_URL),--sample-url $(SAMPLE_URL))) --workdir output/photos

test: venv
	MPLBACKEND=Agg $(PY) -m pytest -q

test-fast: venv
	MPLBACKEND=Agg $(PY) -m pytest -q -m "not slow"

clean:
	rm -rf output .pytest_cache
