GO ?= go
GOBIN := $(shell $(GO) env GOPATH)/bin

.PHONY: test test-race generate verify sim sim-node sim-fsm bench fuzz image cluster cluster5 check-ci check-long

# The default suite: what CI runs (see .ci/run).
test:
	$(GO) test ./...

# The race detector on the packages with concurrency.
test-race:
	$(GO) test -race ./internal/... ./client/... ./cmd/...

generate:
	@command -v protoc >/dev/null || { echo "make generate needs protoc: apt-get install protobuf-compiler (3.21 generated the committed code)"; exit 1; }
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.10
	$(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.19.1
	PATH="$(GOBIN):$$PATH" protoc -I api \
		--go_out=. --go_opt=module=github.com/caucus/caucus \
		--connect-go_out=. --connect-go_opt=module=github.com/caucus/caucus \
		api/caucus/v1/caucus.proto
	PATH="$(GOBIN):$$PATH" protoc -I internal/logpb \
		--go_out=. --go_opt=module=github.com/caucus/caucus \
		internal/logpb/log.proto
	# The native protocol's method table and stubs, from the compiled API (numbers new RPCs in
	# internal/nativeapi/methods.registry).
	$(GO) generate ./internal/nativeapi

verify:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"
	$(GO) vet ./...

# Many simulated seeds: make sim SEEDS=100000 NODES=5
SEEDS ?= 10000
NODES ?= 5
sim:
	$(GO) run ./cmd/caucus-sim -seeds $(SEEDS) -nodes $(NODES)

# The same with real internal/node members on simulated disks: make sim-node SEEDS=20000 NODES=3
sim-node:
	$(GO) run ./cmd/caucus-sim -driver node -seeds $(SEEDS) -nodes $(NODES)

# Real internal/node members running the real internal/fsm, writes carrying events, the event
# stream checks: make sim-fsm SEEDS=2000 NODES=3. The bbolt files go to a tmpfs when there is one
# (FSM_TMPDIR=/dev/shm; their fsyncs are the fsm's own and cost a disk's time for nothing here).
FSM_TMPDIR ?= $(shell test -d /dev/shm -a -w /dev/shm && echo /dev/shm)
sim-fsm:
	TMPDIR=$(or $(FSM_TMPDIR),$(TMPDIR),/tmp) $(GO) run ./cmd/caucus-sim -driver node -sm fsm -seeds $(SEEDS) -nodes $(NODES)

# Containers (no registry here: the static binary is built on the host, the image is FROM scratch).
image:
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -o bin/caucus ./cmd/caucus
	docker build -t caucus:dev .

cluster: image
	docker-compose -f deploy/docker-compose.3.yml -p caucus3 up -d --no-build

cluster5: image
	docker-compose -f deploy/docker-compose.5.yml -p caucus5 up -d --no-build

# The bounded fault-injection set CI runs (also part of `go test ./...`).
check-ci:
	$(GO) test -race ./internal/check/...

# Longer, combined schedules for releases (5 minutes per workload).
check-long:
	for w in register set bank consumer watch; do $(GO) run ./cmd/caucus check --local 3 --workload $$w --time 5m --combined || exit 1; done

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeRecord -fuzztime 60s ./internal/wal
	$(GO) test -run '^$$' -fuzz FuzzReplayTail -fuzztime 60s -fuzzminimizetime 5s ./internal/wal
	$(GO) test -run '^$$' -fuzz FuzzDecodeMessage -fuzztime 60s ./internal/wire
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 60s ./gossip
