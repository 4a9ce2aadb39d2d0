PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build on this project's machines and CI; GPU users: make install TORCH=torch (or their CUDA build).
TORCH ?= torch==2.13.0
DEMO := --config configs/demo.json

.PHONY: install demo lint test clean

install: $(VENV)/.installed

# The repository itself is installed editable (pyproject.toml), so `import artrank` works from any folder.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e . -r requirements-dev.txt
	touch $@

demo: install
	$(BIN)/python make_pairs.py $(DEMO) --overwrite_output_dir
	$(BIN)/python train.py $(DEMO)
	$(BIN)/python evaluate.py $(DEMO)
	$(BIN)/python export_onnx.py $(DEMO) --fp16
	$(BIN)/python predict.py $(DEMO) --dir data/demo/images --out runs/demo/predictions.csv --top 10
	$(BIN)/python predict.py $(DEMO) --compare data/demo/images/artist00_000.png data/demo/images/artist01_000.png

lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -n auto --maxprocesses 8 --dist worksteal

clean:
	rm -rf runs cache models data/demo
