GO ?= go
GOBIN := $(shell $(GO) env GOPATH)/bin

.PHONY: test test-race test-short generate verify sim bench fuzz image cluster check

# The default suite: what CI runs (see .ci/run).
test:
	$(GO) test ./...

# The race detector on the packages with concurrency.
test-race:
	$(GO) test -race ./internal/... ./client/... ./cmd/...

generate:
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.10
	$(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.19.1
	PATH="$(GOBIN):$$PATH" protoc -I api -I internal/cmdpb \
		--go_out=. --go_opt=module=github.com/caucus/caucus \
		--connect-go_out=. --connect-go_opt=module=github.com/caucus/caucus \
		api/caucus/v1/caucus.proto
	PATH="$(GOBIN):$$PATH" protoc -I api -I internal/cmdpb \
		--go_out=. --go_opt=module=github.com/caucus/caucus \
		internal/cmdpb/command.proto

verify:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"
	$(GO) vet ./...

# Many simulated seeds: make sim SEEDS=100000 NODES=5
SEEDS ?= 10000
NODES ?= 5
sim:
	$(GO) run ./cmd/caucus-sim -seeds $(SEEDS) -nodes $(NODES)
