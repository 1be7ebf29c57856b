# cachepool: every target loops over the modules of go.work.
MODULES := $(shell go list -m -f '{{.Dir}}' 2>/dev/null)
GOTEST_FLAGS ?= -race -count=1 -timeout 20m
BENCH ?= .
BENCHTIME ?= 2s

.PHONY: test vet fmt-check bench bench-e2e build work-check tidy

test: fmt-check vet work-check
	@set -e; for m in $(MODULES); do \
		echo "== go test $$m"; \
		(cd $$m && go test $(GOTEST_FLAGS) ./...); \
	done

vet:
	@set -e; for m in $(MODULES); do echo "== go vet $$m"; (cd $$m && go vet ./...); done

fmt-check:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Module benchmarks; the whole-system ones (a full pool per iteration) run
# once each in bench-e2e.
bench:
	@set -e; for m in $(filter-out %/e2e,$(MODULES)); do \
		echo "== go bench $$m"; \
		(cd $$m && go test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) ./...); \
	done
	$(MAKE) bench-e2e

bench-e2e:
	cd e2e && go test -run '^$$' -bench '$(BENCH)' -benchtime 1x .

build:
	go build -o bin/cachepool ./cmd/cachepool

# Every module must also build on its own, through its replace directives.
work-check:
	@set -e; for m in $(MODULES); do echo "== GOWORK=off $$m"; (cd $$m && GOWORK=off go build -o /dev/null ./... && GOWORK=off go mod tidy -diff); done

tidy:
	@set -e; for m in $(MODULES); do (cd $$m && GOWORK=off go mod tidy); done
