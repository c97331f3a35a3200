# Two commands from a fresh machine: `make demo` and `make test`. Each builds the venv and installs
# the package first; the local broker's jars are fetched by `streamproc broker start` on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

# helm for the chart tests, built from source with the local Go (no Docker, no binary downloads).
# The build sits in a versioned directory, so changing HELM_VERSION rebuilds it; tests run .tools/bin/helm.
HELM_VERSION := v3.22.0
HELM_BUILD := .tools/helm-$(HELM_VERSION)/helm
HELM := .tools/bin/helm
GO ?= $(or $(shell command -v go 2>/dev/null),/usr/local/go/bin/go)

# The Kubernetes tests' control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) and
# KEDA (operator, metrics adapter, admission webhooks) with kwok's fake node, built from the Go module proxy
# by the pinned wrapper modules tools/k8s and tools/keda (tests/k8s starts them on loopback). Each build
# sits in a directory named by the hash of its module files, so a version change rebuilds it, and
# .tools/k8s and .tools/keda link to the current one.
# go build stamps no version (Kubernetes' own build does, from git): helm would read v0.0.0 and refuse
# the chart's kubeVersion, so the version the module requires is written in.
K8S_VERSION := $(shell sed -n 's|^\tk8s.io/kubernetes \(v[0-9.]*\).*|\1|p' tools/k8s/go.mod)
K8S_VERSION_FLAGS := -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=$(word 1,$(subst ., ,$(K8S_VERSION:v%=%))) \
	-X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(K8S_VERSION:v%=%)))
K8S_TOOLS := .tools/k8s-$(shell { cat tools/k8s/go.mod tools/k8s/go.sum; echo '$(K8S_VERSION_FLAGS)'; } | sha256sum | cut -c1-12)
KEDA_TOOLS := .tools/keda-$(shell cat tools/keda/go.mod tools/keda/go.sum | sha256sum | cut -c1-12)
GO_BUILD := GOTOOLCHAIN=local GOFLAGS=-mod=readonly $(GO) build -trimpath

# Debian's Chromium for the browser tests (tests/browser): Playwright drives it by its path, so no test
# downloads a browser of its own. Installed from Debian's packages when missing (CI is a fresh machine, as root).
CHROMIUM := /usr/bin/chromium

# The worker image, built with podman and runc from a Debian base made here by debootstrap (no
# Docker engine, no registry with python:3.11-slim). The base's tag is the hash of the script that
# makes it, so editing tools/image/base.sh makes a new one; base.sh tags it only once the import
# succeeded, so `podman image exists` alone keeps a warm `make image` (a fresh clone too) from running
# debootstrap again. podman reads the project's own
# containers.conf (runc, explicit ulimits), written to .tools/image/ from tools/image/containers.conf.in.
VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' streamproc/__init__.py)
IMAGE = localhost/streamproc:$(VERSION)
IMAGE_EXAMPLE = localhost/streamproc-example:$(VERSION)
DEBIAN_SUITE := bookworm
IMAGE_BASE = localhost/streamproc-base:$(DEBIAN_SUITE)-$(shell sha256sum tools/image/base.sh | cut -c1-12)
IMAGE_CONF := .tools/image/containers.conf
PODMAN := CONTAINERS_CONF=$(CURDIR)/$(IMAGE_CONF) podman
# pip in the build uses the host's package index (environment or pip.conf), if it has its own, and
# the host's CA bundle, mounted read-only for the RUN steps only: nothing of it lands in the image.
IMAGE_PIP_INDEX_URL = $(or $(PIP_INDEX_URL),$(shell $(PYTHON) -m pip config get global.index-url 2>/dev/null))
IMAGE_PIP_EXTRA_INDEX_URL = $(or $(PIP_EXTRA_INDEX_URL),$(shell $(PYTHON) -m pip config get global.extra-index-url 2>/dev/null))
IMAGE_PIP_TRUSTED_HOST = $(or $(PIP_TRUSTED_HOST),$(shell $(PYTHON) -m pip config get global.trusted-host 2>/dev/null))
CA_BUNDLE := /etc/ssl/certs/ca-certificates.crt
# Expanded once, on first use (it asks pip), then kept.
IMAGE_BUILD_FLAGS = $(eval IMAGE_BUILD_FLAGS := $(IMAGE_BUILD_FLAGS_ONCE))$(IMAGE_BUILD_FLAGS)
IMAGE_BUILD_FLAGS_ONCE = --network host --build-arg BASE_IMAGE=$(IMAGE_BASE) \
	$(if $(wildcard $(CA_BUNDLE)),--volume /etc/ssl/certs:/etc/ssl/certs:ro --build-arg PIP_CERT=$(CA_BUNDLE)) \
	$(if $(IMAGE_PIP_INDEX_URL),--build-arg PIP_INDEX_URL='$(IMAGE_PIP_INDEX_URL)') \
	$(if $(IMAGE_PIP_EXTRA_INDEX_URL),--build-arg PIP_EXTRA_INDEX_URL='$(IMAGE_PIP_EXTRA_INDEX_URL)') \
	$(if $(IMAGE_PIP_TRUSTED_HOST),--build-arg PIP_TRUSTED_HOST='$(IMAGE_PIP_TRUSTED_HOST)')

.PHONY: install demo test lint unit fuzz chaos docs helm k8s-tools chromium bench broker-stop clean image image-tools image-base image-smoke

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/streamproc demo

lint: install
	$(BIN)/ruff check streamproc tests handlers benchmarks examples
	$(BIN)/ruff format --check streamproc tests handlers benchmarks examples
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit

# The property tests of tests/unit with far more examples than `make test` runs (tests/unit/conftest.py).
fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest --timeout=0 tests/unit

# The chaos harness (SPEC §11): worker kills, broker kills, scaling and a rebalance storm, 20,000
# keyed and 20,000 unkeyed tasks each, on a broker of its own; prints the table (tests/chaos).
chaos: install
	$(BIN)/python -m tests.chaos

# The docs site (docs/, mkdocs.yml) into site/; --strict makes every warning an error (`make test` runs it).
# Not --quiet: it hides the warnings that --strict counts, so a broken link would pass.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: install
	$(BIN)/streamproc bench

helm: $(HELM)

$(HELM_BUILD):
	GOTOOLCHAIN=local GOBIN=$(CURDIR)/$(@D) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

$(HELM): $(HELM_BUILD)
	mkdir -p $(@D)
	ln -sfn ../helm-$(HELM_VERSION)/helm $@

k8s-tools: .tools/k8s/bin/.built .tools/keda/bin/.built

$(K8S_TOOLS)/bin/.built: tools/k8s/go.mod tools/k8s/go.sum
	cd tools/k8s && $(GO_BUILD) -ldflags "$(K8S_VERSION_FLAGS)" -o $(CURDIR)/$(@D)/ tool
	mv $(@D)/server $(@D)/etcd
	touch $@

$(KEDA_TOOLS)/bin/.built: tools/keda/go.mod tools/keda/go.sum
	cd tools/keda && $(GO_BUILD) -o $(CURDIR)/$(@D)/ tool
	for name in operator adapter webhooks; do mv $(@D)/$$name $(@D)/keda-$$name; done
	touch $@

# The link moves to the new build, and earlier builds (hundreds of MB each) go.
.tools/k8s/bin/.built: $(K8S_TOOLS)/bin/.built
	ln -sfn $(notdir $(K8S_TOOLS)) .tools/k8s
	rm -rf $(filter-out $(K8S_TOOLS),$(wildcard .tools/k8s-*))

.tools/keda/bin/.built: $(KEDA_TOOLS)/bin/.built
	ln -sfn $(notdir $(KEDA_TOOLS)) .tools/keda
	rm -rf $(filter-out $(KEDA_TOOLS),$(wildcard .tools/keda-*))

chromium: $(CHROMIUM)

$(CHROMIUM):
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -q --no-install-recommends chromium \
	|| { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }

test: lint docs $(HELM) k8s-tools $(CHROMIUM) image
	$(BIN)/pytest -n 2

# podman, runc and debootstrap from Debian's packages when missing (CI is a fresh machine, as root),
# and the containers.conf with this machine's hard limits: nofile `ulimit -Hn`, nproc `ulimit -Hu`
# but at most 32768, podman's own (tools/image/containers.conf.in says why).
image-tools:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || { \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q --no-install-recommends podman runc debootstrap \
	  || { apt-get update -q && apt-get install -y -q --no-install-recommends podman runc debootstrap; }; }
	@mkdir -p $(dir $(IMAGE_CONF))
	@nofile=$$(bash -c 'ulimit -Hn'); nproc=$$(bash -c 'ulimit -Hu'); \
	[ "$$nofile" = unlimited ] && nofile=1048576; \
	{ [ "$$nproc" = unlimited ] || [ "$$nproc" -gt 32768 ]; } && nproc=32768; \
	sed -e "s/@NOFILE@/$$nofile/g" -e "s/@NPROC@/$$nproc/g" tools/image/containers.conf.in > $(IMAGE_CONF)

# A new base makes every layer built on the old one useless: they go (the untagged images podman
# keeps as the build cache), and so does the old base's tag.
image-base: image-tools
	@if $(PODMAN) image exists $(IMAGE_BASE); then \
	  echo "$(IMAGE_BASE): built already"; \
	else \
	  $(PODMAN) image prune --force >/dev/null; \
	  CONTAINERS_CONF=$(CURDIR)/$(IMAGE_CONF) sh tools/image/base.sh $(IMAGE_BASE) $(DEBIAN_SUITE) .tools/image/rootfs \
	  && $(PODMAN) images --format '{{.Repository}}:{{.Tag}}' $(firstword $(subst :, ,$(IMAGE_BASE))) \
	     | grep -vx '$(IMAGE_BASE)' | xargs -r env $(PODMAN) untag; \
	fi

# Two targets of the Dockerfile: the worker image (the package alone) and the example image (plus
# handlers/ and topics/), the Helm chart's default image.repository.
image: image-base
	$(PODMAN) build $(IMAGE_BUILD_FLAGS) --target worker --tag $(IMAGE) .
	$(PODMAN) build $(IMAGE_BUILD_FLAGS) --target example --tag $(IMAGE_EXAMPLE) .

# The image tests alone (`make test` runs them too): --version, and a worker container that runs
# tasks from the local broker and exits 0 on SIGTERM.
image-smoke: install image
	$(BIN)/pytest tests/image

broker-stop: install
	$(BIN)/streamproc broker stop

clean: broker-stop
	rm -rf $(VENV)
