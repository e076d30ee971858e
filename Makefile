# The README's two quickstart commands. Each first makes sure the project is installed
# (scripts/with_env.sh: the active virtualenv or conda env, else ./.venv, created and installed
# once; later runs skip the install in well under a second), then runs.
#
#   make demo                      meta-train, validate and test the quickstart preset into runs/
#   make test                      the test suite
#   make test PYTEST_ARGS="-q tests/data"    a subset (any pytest arguments)
#   make env                       only the set-up
#
# Without make: bash scripts/with_env.sh python run_maml.py --config configs/quick_builtin.yaml --dataset builtin

DEMO_CONFIG ?= configs/quick_builtin.yaml
PYTEST_ARGS ?= -q

.PHONY: demo test env

demo:
	@bash scripts/with_env.sh python run_maml.py --config $(DEMO_CONFIG) --dataset builtin

test:
	@bash scripts/with_env.sh python -m pytest $(PYTEST_ARGS)

env:
	@bash scripts/with_env.sh true
