# Two commands on a fresh machine: `make up`, then `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(abspath ansible.cfg)
export ANSIBLE_FORCE_COLOR ?= 0

N ?=
EXTRA := $(if $(N),-e webapp_count=$(N))

.PHONY: help venv up down status demo screenshot lint unit integration molecule test vm vm-test bench clean
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## Create .venv with the pinned tools and collections

$(VENV)/.installed: requirements.txt pyproject.toml requirements.yml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -e .
	$(BIN)/ansible-galaxy collection install -r requirements.yml
	touch $@

up: venv ## Build the images and start the cluster (N=5 for 5 backends)
	ansible-playbook site.yml $(EXTRA)
	@echo "HTTP:  http://127.0.0.1:8080/"
	@echo "HTTPS: https://127.0.0.1:8443/  (CA: inventory/local/.secrets/tls-ca.crt)"
	@echo "stats: http://127.0.0.1:1936/  user admin, password: $$(cat inventory/local/.secrets/stats-password)"

down: venv ## Remove the cluster's containers and network
	ansible-playbook playbooks/destroy.yml

status: venv ## Membership, /nodes and HAProxy in one table
	docker exec ha lbcluster-status

demo: venv ## The lab's demonstration: scale 2 -> 5, kill one, stop one, back to 2
	$(BIN)/python scripts/demo.py

screenshot: venv ## docs/stats.png: the stats page of a cluster with 4 backends
	ansible-playbook site.yml -e webapp_count=4
	$(BIN)/python scripts/screenshot.py docs/stats.png --expect s1,s2,s3,s4

lint: venv ## ansible-lint, yamllint, ruff, mypy
	yamllint --strict .
	ansible-lint
	ruff check .
	ruff format --check .
	mypy
	@if command -v vagrant >/dev/null; then vagrant validate --ignore-provider; \
	else echo "lint: vagrant is not installed: Vagrantfile not validated"; fi

unit: venv ## Fast tests of the pure Python logic and the Ansible modules
	pytest -q tests/unit

integration: venv ## Real containers: the playbook, HTTP through HAProxy, faults
	pytest -q -x tests/integration

molecule: venv ## molecule test for every scenario
	molecule test --all

test: venv ## Everything CI runs: lint, unit, integration, then molecule beside vm-test (timed)
	@for target in lint unit integration; do \
	    start=$$(date +%s); \
	    $(MAKE) --no-print-directory $$target || exit 1; \
	    echo "::: make $$target: $$(( $$(date +%s) - start )) s"; \
	done
	@# The VM (QEMU's emulation) and molecule's containers share nothing: side
	@# by side they take 9.5 min here instead of 14 one after the other. The
	@# VM test's output waits in a file and follows molecule's.
	@mkdir -p .cache; start=$$(date +%s); \
	$(MAKE) --no-print-directory vm-test > .cache/vm-test.log 2>&1 & vm=$$!; \
	$(MAKE) --no-print-directory molecule; molecule=$$?; \
	echo "::: make molecule: $$(( $$(date +%s) - start )) s"; \
	wait $$vm; vm=$$?; cat .cache/vm-test.log; \
	echo "::: make vm-test, beside molecule: $$(( $$(date +%s) - start )) s"; \
	[ $$molecule -eq 0 ] && [ $$vm -eq 0 ]

bench: venv ## Benchmarks (QUICK=1 for a short run)
	$(BIN)/python bench/run.py $(if $(QUICK),--quick)

vm: venv ## Prepare this machine for Vagrant (QEMU, libvirt, vagrant-libvirt) and build the box
	ansible-playbook playbooks/vm_host.yml

vm-test: vm ## vagrant up for real: the cluster answers from the VM (192.168.42.42), then destroy
	pytest -q -s -x tests/vm

clean: ## Remove the cluster, the project's images and the venv
	-ansible-playbook playbooks/destroy.yml
	-docker images --filter label=io.lbcluster.image -q | sort -u | xargs -r docker rmi -f
	rm -rf $(VENV)
