# bty — build, test, lint, bench. See README.md.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/btyproject/bty/internal/version.Version=$(VERSION)
CMDS := bty bty-tui bty-web bty-ctl bty-media
GOBIN_DIR := $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOBIN_DIR)/staticcheck
STATICCHECK_VERSION ?= v0.8.2

.PHONY: all build test test-unit deps lint demo bench bench-delta bench-web vmtest vmtest-run clean screenshots media fuzz

all: build

## build: static binaries for every program into bin/
build:
	@mkdir -p bin
	@for c in $(CMDS); do \
		CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/$$c ./cmd/$$c || exit 1; \
	done
	@echo "built: $(addprefix bin/,$(CMDS))"

## deps: install the Debian packages the tests use (idempotent)
deps:
	@scripts/install-deps.sh test

## test: install test dependencies, build, run every test with the race detector (root: loop devices too; the decoder conformance test), a short fuzz run, then the VM test
test: deps build
	BTY_MEDIA_TEST=1 BTY_REQUIRE_TOOLS=1 $(GO) test -race -count=1 -timeout 30m ./...
	@$(MAKE) --no-print-directory fuzz
	@$(MAKE) --no-print-directory vmtest-run

## fuzz: each fuzz target for FUZZTIME (default 10s): the decoders' output equals the reference decoder's, or bty fails (internal/image/fuzz_test.go); what open routes parse (internal/fleet/fuzz_test.go)
FUZZTIME ?= 10s
FUZZ_TARGETS := internal/image:FuzzOpen internal/image:FuzzQcow2 internal/image:FuzzXzIndex internal/image:FuzzZstdSeq \
	internal/fleet:FuzzProgress internal/fleet:FuzzParseMAC internal/fleet:FuzzCheckWorkflow
FUZZ_TARGETS += internal/fleet:FuzzInventory internal/chunks:FuzzParse
# The fuzz cache ($GOCACHE/fuzz) is cleared first: inputs it gathers over
# many runs (over 1,000 here) made the baseline pass outlast FUZZTIME and
# the run fail with "context deadline exceeded". Failures found are kept
# in internal/image/testdata/fuzz, which is the corpus that matters.
fuzz:
	@$(GO) clean -fuzzcache
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; f=$${t#*:}; \
		echo "fuzz: $$f ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run XXX -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 50x ./$$pkg/ || exit 1; \
	done

## screenshots: refresh the README's browser UI screenshots (docs/screenshots) from the browser tests
screenshots: deps
	rm -rf .cache/screenshots && mkdir -p .cache/screenshots docs/screenshots
	BTY_SCREENSHOT_DIR=$(CURDIR)/.cache/screenshots $(GO) test -count=1 -run 'TestBrowserFlow' ./internal/server
	cp .cache/screenshots/02-dashboard.png docs/screenshots/dashboard.png
	cp .cache/screenshots/03-machines.png docs/screenshots/machines.png
	cp .cache/screenshots/04-machine-detail.png docs/screenshots/machine.png
	cp .cache/screenshots/05-images.png docs/screenshots/images.png
	cp .cache/screenshots/phone-03-machines.png docs/screenshots/phone-machines.png

## test-unit: go test alone: no packages installed, no race detector (tests needing a missing tool or root skip)
test-unit:
	$(GO) test ./...

## lint: gofmt, go vet, staticcheck (installed on demand)
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@test -x $(STATICCHECK) || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(STATICCHECK) ./...

## demo: build, then flash a generated image onto a loop device and prove it bit-identical (root)
demo: build
	@scripts/install-deps.sh test
	scripts/demo.sh

## bench-web: bty-web under wrk (10,000 machines) and image downloads against nginx
bench-web: build
	@scripts/install-deps.sh bench-web
	scripts/bench-web.sh

## bench: flash benchmark against dd, zstd|dd, gzip|dd, xz|dd, qemu-img, bmaptool, then bench-delta (root, minutes)
bench: build
	@scripts/install-deps.sh bench
	scripts/bench.sh
	scripts/bench-delta.sh

## bench-delta: full vs delta flashes (1, 5, 25 % changed) from bty-web over a link shaped to 1 Gbit/s (root, minutes)
bench-delta: build
	@scripts/install-deps.sh bench
	scripts/bench-delta.sh

## vmtest: flash a Debian cloud-init image with --provision cloud-init|cijoe and boot it in QEMU; the full PXE reflash cycle through bty-web and the live env; the USB stick and the server appliance booted (root; builds the image once into .cache/, minutes)
vmtest: deps build vmtest-run

vmtest-run:
	@scripts/install-deps.sh vm
	BTY_VMTEST=1 $(GO) test -count=1 -timeout 40m -v -run . ./e2e/
	BTY_VMTEST=1 $(GO) test -count=1 -timeout 10m -v -run TestPXEChainOVMF ./internal/netboot/
	BTY_VMTEST=1 BTY_MEDIA_TEST=1 $(GO) test -count=1 -timeout 10m -v -run TestBoot ./internal/media/

## media: the netboot live env (out/netboot), a live USB image and a bty-web appliance image (out/), with bty-media
media: build
	@scripts/install-deps.sh media
	bin/bty-media netboot --out out/netboot
	bin/bty-media usb --out out/bty-usb.img --force
	bin/bty-media server --out out/bty-server.img --force

clean:
	rm -rf bin
