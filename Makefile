# One entry point for people and CI.  `make run` = set-up + both notebooks executed in place;
# `make test` = the test suite.  PROFILE=auto|full|cpu|smoke picks the budget (auto: full on CUDA, else cpu).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
KERNEL ?= hw6
PROFILE ?= auto
NOTEBOOKS = notebooks/01_controlvae_dsprites.ipynb notebooks/02_gans_mnist.ipynb
TORCH_HUB_CHECKPOINTS = $(or $(TORCH_HOME),$(HOME)/.cache/torch)/hub/checkpoints
FID_WEIGHTS_NAME = pt_inception-2015-12-05-6726825d.pth

.PHONY: venv run test sync weights readme bench report package clean-outputs mutate

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install -q -r requirements.txt 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import torch, torchvision, pytorch_fid, papermill, jupytext"  # fail here if the install failed
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "HW6 ($(VENV))" >/dev/null
	touch $@

venv: $(VENV)/.installed

# Offline: FID_WEIGHTS=/path/to/pt_inception-2015-12-05-6726825d.pth copies the weights into the
# torch hub cache (pytorch-fid downloads them itself when the network allows).
weights:
	@if [ -n "$(FID_WEIGHTS)" ]; then mkdir -p "$(TORCH_HUB_CHECKPOINTS)" && cp "$(FID_WEIGHTS)" "$(TORCH_HUB_CHECKPOINTS)/$(FID_WEIGHTS_NAME)"; fi

run: venv weights
	cd notebooks && for nb in $(notdir $(NOTEBOOKS)); do \
	  ../$(PY) -m papermill -k $(KERNEL) "$$nb" "$$nb" -p PROFILE $(PROFILE) --cwd . || exit 1; \
	done
	$(PY) scripts/stamp_notebooks.py
	$(PY) scripts/readme_results.py

# The README's results table, from results/*.json.
readme:
	$(PYTHON) scripts/readme_results.py

# Benchmark (not a test): FID path vs pytorch-fid, step times, wall times. See bench/README.md.
bench: venv weights
	$(PY) bench/bench.py

# Mutation check of the tests (not in CI, ~30 min): which single wrong changes do the tests catch?
mutate: venv
	$(PY) scripts/mutate.py

# The Persian report: numbers and tables from results/*.json (report/generate.py), then XeLaTeX.
# Needs texlive-xetex texlive-lang-arabic texlive-fonts-recommended latexmk (see report/README.md).
report:
	$(PYTHON) report/generate.py
	cd report && latexmk -xelatex -interaction=nonstopmode -halt-on-error -outdir=build report.tex >build.log 2>&1 \
	  || { tail -40 build.log; echo "report build failed: see report/build.log and report/build/report.log"; exit 1; }
	cp report/build/report.pdf report/report.pdf
	@echo "wrote report/report.pdf"

# The submission zip (name from report/config.toml, or NAME=HW6_Lastname_Number_Lastname_Number).
package:
	$(PYTHON) scripts/package.py $(if $(NAME),--name $(NAME))

# pytest exits 5 when it collects no test: say so rather than fail.
test: venv
	@rc=0; $(PY) -m pytest -q || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

# After editing a notebook or its .py twin: bring the pair back in sync (the newer file wins).
sync: venv
	$(VENV)/bin/jupytext --sync notebooks/*.py
	$(PY) scripts/tag_cells.py notebooks/*.py  # jupytext keeps the .ipynb's tags: copy the twin's

clean-outputs:
	rm -rf checkpoints samples
