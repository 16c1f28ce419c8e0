# onbehalf — make help lists the targets.

SHELL      := /bin/bash
GO         ?= go
BIN        := bin/onbehalf
STATE      := .onbehalf
CACHE      := $(CURDIR)/.cache
VAULT_BIN  := $(CACHE)/bin/vault
KUBE_APISERVER_BIN := $(CACHE)/bin/kube-apiserver
KUBECTL_BIN := $(CACHE)/bin/kubectl
# Each pinned Kubernetes build is keyed by the content of its recipe (not
# file times, which a fresh checkout resets): a stamp file named by the
# recipe's hash says the binary beside it was built from it.
recipe_hash = $(shell cat $(addprefix tools/$(1)/,go.mod go.sum build.sh) | sha256sum | cut -c1-16)
KUBE_APISERVER_STAMP := $(KUBE_APISERVER_BIN).$(call recipe_hash,kube-apiserver).built
KUBECTL_STAMP := $(KUBECTL_BIN).$(call recipe_hash,kubectl).built
# A stamp without its binary (deleted by hand) does not count.
$(foreach b,$(KUBE_APISERVER_BIN) $(KUBECTL_BIN),$(if $(wildcard $(b)),,$(shell rm -f $(b).*.built)))
PKGS       := ./...
# VERSION and COMMIT are what `onbehalf version` prints (stamped here: the
# toolchain's own VCS stamp is off wherever GOFLAGS has -buildvcs=false).
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT     ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# Tests run with the race detector; the integration tag adds the tests that
# start real processes (the sidecar binary, curl, Python, Node, Vault).
TEST_FLAGS ?= -race -tags integration -count=1 -timeout 20m
FUZZTIME   ?= 5s

export ONBEHALF_BIN := $(CURDIR)/$(BIN)
export ONBEHALF_VAULT_BIN := $(VAULT_BIN)
export ONBEHALF_KUBE_APISERVER_BIN := $(KUBE_APISERVER_BIN)
export ONBEHALF_KUBECTL_BIN := $(KUBECTL_BIN)

.DEFAULT_GOAL := help

.PHONY: help
help: ## list targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/onbehalf (static: no libc to map, runs in a scratch image), stamped with the version
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o $(BIN) ./cmd/onbehalf

.PHONY: run
run: build ## run the sidecar on the embedded store with examples/onbehalf.yaml
	@mkdir -p $(STATE) && chmod 700 $(STATE)
	@$(BIN) ca init --dir $(STATE) --if-missing
	@test -f $(STATE)/orchestrator.key || $(BIN) assert keygen --private $(STATE)/orchestrator.key --public $(STATE)/orchestrator.pub
	$(BIN) serve --config examples/onbehalf.yaml

.PHONY: demo
demo: build ## run the self-contained end-to-end demo
	$(BIN) demo

.PHONY: vault
vault: $(VAULT_BIN) ## build the pinned Vault server the tests start (cached in .cache/bin)

$(VAULT_BIN):
	@mkdir -p $(dir $(VAULT_BIN))
	@echo "building Vault $(shell awk '/hashicorp\/vault v/ {print $$3; exit}' tools/vault/go.mod) for the tests (once; cached in $(VAULT_BIN))"
	cd tools/vault && $(GO) build -o $(VAULT_BIN) github.com/hashicorp/vault

.PHONY: kube-apiserver
kube-apiserver: $(KUBE_APISERVER_STAMP) ## build the pinned kube-apiserver the chart tests start (cached in .cache/bin)

# A cold build takes 10 to 30 minutes on two cores; the binary is kept in
# .cache/bin and rebuilt only when tools/kube-apiserver changes.
$(KUBE_APISERVER_STAMP):
	@mkdir -p $(dir $(KUBE_APISERVER_BIN))
	@echo "building kube-apiserver $(shell awk '/^require k8s.io\/kubernetes/ {print $$3; exit}' tools/kube-apiserver/go.mod) for the chart tests (once; cached in $(KUBE_APISERVER_BIN))"
	bash tools/kube-apiserver/build.sh $(KUBE_APISERVER_BIN)
	@rm -f $(KUBE_APISERVER_BIN).*.built && touch $@

.PHONY: kubectl
kubectl: $(KUBECTL_STAMP) ## build the pinned kubectl the chart tests run the install notes with (cached in .cache/bin)

$(KUBECTL_STAMP):
	@mkdir -p $(dir $(KUBECTL_BIN))
	bash tools/kubectl/build.sh $(KUBECTL_BIN)
	@rm -f $(KUBECTL_BIN).*.built && touch $@

IMAGE ?= localhost/onbehalf:dev

.PHONY: image
image: ## build the image with buildah (no registry or base image needed) into local storage, and check it
	@mkdir -p $(CACHE)/image
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o $(CACHE)/image/onbehalf ./cmd/onbehalf
	bash tools/image/build.sh $(CACHE)/image/onbehalf $(IMAGE) $(VERSION) $(COMMIT)
	bash tools/image/check.sh $(IMAGE) $(CACHE)/image/onbehalf

.PHONY: unit
unit: ## fast loop: plain `go test ./...` (no tags, no servers, no race detector)
	$(GO) test -count=1 $(PKGS)

.PHONY: test
test: build agents axe vault lint ## run every test (unit, integration, policies, chart, fuzz) with -race, after lint
	$(GO) test $(TEST_FLAGS) $(PKGS)
	@for d in examples/policies/*/; do $(BIN) policy test "$$d" || exit 1; done
	$(MAKE) --no-print-directory chartcheck
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME)

.PHONY: chartcheck
chartcheck: build kube-apiserver kubectl ## the chart: lint/template and strict decoding over value sets, then install, webhook, RBAC and upgrade against a real kube-apiserver (etcd-server, in a network namespace)
	cd charts/chartcheck && ONBEHALF_BIN=$(CURDIR)/$(BIN) $(GO) test -race -tags integration -count=1 -timeout 20m ./...

.PHONY: agents
agents: ## install the Node dependencies of the example agents (undici; the MCP TypeScript SDK) and of the end-to-end test clients (ws, undici)
	@cd examples/agents/node && { test -d node_modules/undici || npm ci --no-audit --no-fund --loglevel=error; }
	@cd examples/agents/mcp && { test -d node_modules/@modelcontextprotocol/sdk || npm ci --no-audit --no-fund --loglevel=error; }
	@cd internal/testkit/e2e/testdata/node && { test -d node_modules/ws || npm ci --no-audit --no-fund --loglevel=error; }
.PHONY: axe
axe: ## install axe-core for the connect server's browser tests (screenshots go to $$ONBEHALF_SCREENSHOTS or .cache/screenshots)
	@cd internal/testkit/chromium/testdata/axe && { test -f node_modules/axe-core/axe.min.js || npm ci --no-audit --no-fund --loglevel=error; }

.PHONY: bench
bench: build vault ## run the Go benchmarks, then the side-by-side load harness (writes docs/benchmarks.md)
	$(GO) test -tags integration -run='^$$' -bench=. -benchmem $(PKGS)
	@bash tools/loadbench/install-competitors.sh
	$(GO) run ./tools/loadbench --onbehalf $(BIN) --write docs/benchmarks.md

# Every fuzz target, each for FUZZTIME (make fuzz FUZZTIME=5m for a long run).
FUZZ_TARGETS := \
	./internal/config:FuzzDecode \
	./injector:FuzzRouteDecision \
	./internal/scrub:FuzzReader \
	./proxy:FuzzSanitizeRequest \
	./proxy:FuzzCheckHead \
	./proxy:FuzzBindTunnelRequest \
	./proxy/mcp:FuzzParse \
	./proxy:FuzzH2StreamBinding \
	./proxy:FuzzWSScrubber \
	./proxy:FuzzWriteRequest \
	./proxy:FuzzWriteResponse \
	./proxy/certs:FuzzLeafTBS \
	./proxy/identity:FuzzPreparse \
	./proxy/identity:FuzzCheckObject \
	./proxy/identity:FuzzFromHeader \
	./audit:FuzzVerify \
	./audit:FuzzEncodeRecord \
	./webhook:FuzzAdmit \
	./connect:FuzzSafeReturnTo

.PHONY: fuzz
fuzz: ## run each fuzz target for FUZZTIME (default 5s)
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
		run() { $(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=1s $$pkg > /tmp/onbehalf-fuzz.log 2>&1; }; \
		if ! run; then \
			if grep -q 'context deadline exceeded' /tmp/onbehalf-fuzz.log && ! grep -q 'Failing input written' /tmp/onbehalf-fuzz.log; then \
				echo "  the fuzzer's own deadline ended it without a failing input (a Go fuzzing quirk); once more"; \
				run || { cat /tmp/onbehalf-fuzz.log; exit 1; }; \
			else cat /tmp/onbehalf-fuzz.log; exit 1; fi; \
		fi; \
	done

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: lint
lint: ## no build output in git; go vet and staticcheck (pinned) over the module and the chart checks
	@bash tools/checkfiles.sh
	$(GO) vet -tags integration $(PKGS)
	$(GO) run $(STATICCHECK) -tags integration $(PKGS)
	cd charts/chartcheck && $(GO) vet -tags integration ./... && $(GO) run $(STATICCHECK) -tags integration ./...

.PHONY: clean
clean: ## remove build output and local state
	rm -rf bin $(STATE)
