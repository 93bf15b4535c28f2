# `make test` and `make run` work on a fresh machine: they create .venv and install l2l into it first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
L2L    := $(VENV)/bin/l2l
STAMP  := $(VENV)/.installed

.PHONY: install test test-slow test-all smoke run bench lint wheel clean pretrained report report-runs

install: $(STAMP)

# torch first, pinned to the CPU build where none is present: a bare `torch` requirement pulls multi-GB CUDA wheels.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

test-all: install
	$(PY) -m pytest -q -m "slow or not slow"

# Every command on every task (conf/task/*.yaml) through the installed `l2l`, in a fresh folder, at recipe=smoke's
# tiny sizes: meta-train -> evaluate --checkpoint -> sweep-baselines -> evaluate --checkpoint --baselines (the first
# and last with logger=many: TensorBoard and MLflow).
TASKS := $(basename $(notdir $(wildcard conf/task/*.yaml)))
smoke: install
	@set -e; l2l=$(abspath $(L2L)); dir=$$(mktemp -d); cd $$dir; \
	for task in $(TASKS); do \
	  echo "smoke: $$task"; \
	  $$l2l meta-train task=$$task recipe=smoke out_dir=out logger=many; \
	  run=$$(ls -d out/meta-train/$$task/*); \
	  $$l2l evaluate --checkpoint $$run out_dir=out; \
	  $$l2l sweep-baselines task=$$task recipe=smoke out_dir=out; \
	  sweep=$$(ls -d out/sweep-baselines/$$task/*); \
	  $$l2l evaluate --checkpoint $$run --baselines $$sweep out_dir=out logger=many; \
	done; \
	$$l2l pretrained; $$l2l evaluate --pretrained quadratic recipe=smoke out_dir=out; \
	$$l2l report out --out out/report.md --html; \
	echo "smoke: meta-train, evaluate, sweep-baselines, evaluate --baselines passed on $(TASKS); pretrained, report (runs in $$dir)"

run: install
	$(L2L) experiment

# Regenerate the rules shipped in l2lcli/pretrained/: each task's default recipe meta-trained, swept and evaluated by
# `l2l experiment` (one thread each; `make -j2 pretrained` runs two at once), then shipped with its card by
# `l2l pretrained add`. About an hour on 2 cores. CIFAR_DATASET=cifar10 where the CIFAR-10 archive is in data.root.
CIFAR_DATASET   ?= fashion_mnist
PRETRAINED_OUT  ?= outputs/pretrained
PRETRAINED_ARGS ?=
# e.g. make pretrained-mnist PRETRAINED_ARGS=train.time_limit=3600
pretrained: $(addprefix pretrained-,$(TASKS))
pretrained-%: install
	$(L2L) experiment task=$* $(if $(filter cifar,$*),task.dataset=$(CIFAR_DATASET)) device.threads=1 \
	  out_dir=$(PRETRAINED_OUT) $(PRETRAINED_ARGS)
	$(L2L) pretrained add $$(ls -td $(PRETRAINED_OUT)/evaluate/$*/* | head -1) --name $*

# The reproduction report (docs/report.md) from the runs under REPORT_RUNS (every claim; those with no run: "not yet
# run"). `make report-runs` makes every run it needs from scratch, for each of SEEDS: the four tasks' experiments
# (on quadratics the plain LSTM, the paper's claim), LSTM+GAC, NTM-BFGS and the paper's LSTM on quadratics, Figures 5-8 (generalize; CIFAR's LSTM-sub on the held-out labels), and the
# long horizons (1,000 steps on quadratics and MNIST, 10,000 on quadratics, baselines swept at each). Its budgets add
# up to about 5 hours per seed on this 2-core machine (estimated from the time limits; not run end to end here).
SEEDS       ?= 0 1
REPORT_RUNS ?= outputs/report
last = $$(ls -td $(REPORT_RUNS)/$(1)/* | head -1)
report: install
	$(L2L) report $(REPORT_RUNS) --out docs/report.md --readme README.md --html
report-runs: install
	@set -e; l2l=$(abspath $(L2L)); o=out_dir=$(REPORT_RUNS); for s in $(SEEDS); do \
	  $$l2l experiment task=quadratic optimizer=lstm seed=$$s $$o; q=$(call last,meta-train/quadratic); \
	  for opt in lstm_gac ntm_bfgs; do $$l2l experiment task=quadratic optimizer=$$opt seed=$$s $$o; done; \
	  $$l2l experiment task=quadratic recipe=paper seed=$$s $$o; \
	  for n in 1000 10000; do $$l2l sweep-baselines task=quadratic eval.steps=$$n $$o; \
	    $$l2l evaluate --checkpoint $$q --baselines $(call last,sweep-baselines/quadratic) eval.steps=$$n $$o; done; \
	  $$l2l experiment task=mnist seed=$$s $$o; m=$(call last,meta-train/mnist); \
	  $$l2l generalize --checkpoint $$m generalize.figure=figure5 $$o; \
	  $$l2l generalize --checkpoint $$m generalize.figure=figure6 $$o; \
	  $$l2l sweep-baselines task=mnist eval.steps=1000 $$o; \
	  $$l2l evaluate --checkpoint $$m --baselines $(call last,sweep-baselines/mnist) eval.steps=1000 $$o; \
	  $$l2l experiment task=cifar task.dataset=$(CIFAR_DATASET) seed=$$s $$o; c=$(call last,meta-train/cifar); \
	  $$l2l meta-train task=cifar task.dataset=$(CIFAR_DATASET) task.classes=heldout5 seed=$$s $$o; \
	  $$l2l generalize --checkpoint $$c --sub $(call last,meta-train/cifar) generalize.figure=figure7 $$o; \
	  $$l2l experiment task=art seed=$$s $$o; \
	  $$l2l generalize --checkpoint $(call last,meta-train/art) generalize.figure=figure8 $$o; \
	done; $$l2l report $(REPORT_RUNS) --out docs/report.md --readme README.md --html

bench: install
	$(PY) benchmarks/bench.py
	$(PY) benchmarks/loggers.py

lint: install
	$(VENV)/bin/ruff check l2lcli tests benchmarks examples

wheel: install
	$(PY) -m build --wheel --outdir dist .

clean:
	rm -rf $(VENV) dist build *.egg-info
