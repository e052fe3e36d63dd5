# Two commands do all the set-up on a fresh machine:
#   make demo   environment + synthetic VOC data + .rec + train a small SSD on CPU + mAP + pictures
#   make test   environment + the whole test suite (what CI runs)
#   make photos environment + a VOC folder of photos (PHOTOS=) -> trained detector + mAP + pictures
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEMO   ?= output/demo
PHOTOS ?= ../shared/data/raccoon

.PHONY: venv demo photos test test-fast clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

demo: venv
	MPLBACKEND=Agg $(PY) -m tools.run_demo --workdir $(DEMO)

photos: venv
	MPLBACKEND=Agg $(PY) tools/train_photos.py --voc-root $(PHOTOS)/VOCdevkit \
		--class-names $(PHOTOS)/class_names.txt --workdir output/photos

test: venv
	MPLBACKEND=Agg $(PY) -m pytest -q

test-fast: venv
	MPLBACKEND=Agg $(PY) -m pytest -q -m "not slow"

clean:
	rm -rf output .pytest_cache
