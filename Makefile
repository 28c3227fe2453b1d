# Gearman job queue with Ansible: the lab and the tests.
#   make lab          one host with job server, MySQL queue, workers (Docker), then the experiment
#                     LAB_TOPOLOGY=cluster: db1, gm1, gm2, wk1, web1 over SSH instead
#   make lab-destroy  remove whichever lab is up
#   make lab-picture  the experiment once more on the lab, drawn from Prometheus (docs/monitoring-experiment.svg)
#   make test         linters, unit tests and molecule on every platform
#   make bench        queue throughput, database settings, deep backlogs and a re-run's cost in the lab;
#                     writes docs/benchmarks.md
#   make lint         yamllint, ansible-lint and pyflakes (pre-commit runs these and the unit tests)
#   make release      the changelog for galaxy.yml's version, then the collection's tarball in .cache/release
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LAB_DISTRO ?= debian-12
export LAB_DISTRO
# allinone: the tutorial's one machine (inventories/lab, docker exec);
# cluster: five hosts reached over SSH (inventories/cluster).
LAB_TOPOLOGY ?= allinone
LAB_INVENTORY := $(if $(filter cluster,$(LAB_TOPOLOGY)),inventories/cluster,inventories/lab)
export PATH := $(abspath $(BIN)):$(PATH)
export ANSIBLE_CONFIG := $(abspath ansible.cfg)

.PHONY: help venv engine image lab lab-destroy lab-picture test lint unit images clean bench collection release

help:
	@sed -n 's/^#   //p' Makefile

# The tools, pinned in requirements.txt; python3-venv is installed when the
# system Python lacks it (Debian and Ubuntu split it out).
$(BIN)/ansible-playbook: requirements.txt requirements.yml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 && $(PYTHON) -c 'import ensurepip' 2>/dev/null \
	  || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; } \
	  || { echo "Install python3-venv (apt-get install python3-venv) and run make again."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/ansible-galaxy collection install -r requirements.yml
	@touch $@

venv: $(BIN)/ansible-playbook

engine:
	@$(PYTHON) lab/engine.py

image: engine
	@$(PYTHON) lab/base_image.py $(LAB_DISTRO)

images: engine
	@$(PYTHON) lab/base_image.py debian-12 debian-13 ubuntu-24.04 ubuntu-22.04

lab: venv image
	@case "$(LAB_TOPOLOGY)" in allinone|cluster) ;; *) echo "LAB_TOPOLOGY takes allinone or cluster"; exit 2;; esac
	$(BIN)/ansible-playbook -i $(LAB_INVENTORY) playbooks/lab.yml
	$(if $(filter cluster,$(LAB_TOPOLOGY)),$(BIN)/ansible-playbook -i $(LAB_INVENTORY) playbooks/ssh_access.yml)
	$(BIN)/ansible-playbook -i $(LAB_INVENTORY) playbooks/controller_ca.yml
	$(BIN)/ansible-playbook -i $(LAB_INVENTORY) site.yml
	$(BIN)/ansible-playbook -i $(LAB_INVENTORY) playbooks/demo.yml
	@$(BIN)/ansible-playbook -i $(LAB_INVENTORY) playbooks/lab.yml --tags next-steps

lab-picture: venv
	$(BIN)/python lab/queue_picture.py --out docs/monitoring-experiment.svg

bench: venv
	$(BIN)/ansible-playbook -i $(LAB_INVENTORY) playbooks/bench.yml -e '{"bench_args": "$(BENCH_ARGS)"}'
	$(BIN)/python bench/deploy_bench.py -i $(LAB_INVENTORY) --report docs/benchmarks.md

lab-destroy: venv
	$(BIN)/ansible-playbook playbooks/lab.yml -e lab_state=absent -e lab_remove_all=true

lint: venv
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint --offline
	$(BIN)/pyflakes $$(git ls-files '*.py')

unit: venv
	$(BIN)/python -m pytest -q tests/unit

# The collection built from this clone, installed into .cache/collection.
collection: venv
	$(BIN)/python tests/build_collection.py

# Fragments in changelogs/fragments become the release's section of
# CHANGELOG.md (antsibull-changelog; again for the same version, it changes
# nothing); then the tarball to publish.
release: venv
	$(BIN)/antsibull-changelog lint
	$(BIN)/antsibull-changelog release
	$(BIN)/ansible-galaxy collection build --force --output-path .cache/release
	@ls .cache/release/*.tar.gz

test: venv engine
	$(BIN)/python tests/run_tests.py

clean:
	rm -rf $(VENV) .cache
