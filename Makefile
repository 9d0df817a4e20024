# Tandem build. Every target installs what it needs (Debian 12, as root) and is idempotent.
SHELL := /bin/bash
# A Go new enough for go.mod; on a fresh Debian 12 the script fetches it.
GO := $(shell $(CURDIR)/scripts/ensure-go.sh)
ifeq ($(GO),)
$(error no usable Go toolchain; see scripts/ensure-go.sh)
endif
export PATH := $(dir $(GO)):$(CURDIR)/.tools/bin:$(PATH)
# No GOFLAGS=-mod=mod: a build must never rewrite go.mod or go.sum; the
# default -mod=readonly fails instead when they are incomplete.
TOOLS := $(CURDIR)/.tools/bin

PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GRPCURL_VERSION            := v1.9.3
STATICCHECK_VERSION        := v0.8.2

# Debian packages the tests and the demo drive as real parts. The Ceph ones
# are Debian 12's Ceph 16.2 "pacific": the client libraries the RBD backend
# links (blockstore/rbd, cgo through go-ceph) and the daemons of the tests'
# micro cluster (internal/cephtest). GRUB, xorriso and mtools build the
# bootable ISO of e2e/image_test.go (grub-mkrescue); xorriso also builds
# VMs' cloud-init seeds (internal/cloudinit, on every node); ovmf is the UEFI
# firmware of --firmware uefi; qemu-block-extra holds QEMU's rbd block driver
# (VMs on RBD open their disks through it); iptables queues the chaos
# schedules' delayed packets to userspace (NFQUEUE, internal/netdelay).
APT_PKGS := lintian iproute2 protobuf-compiler libprotobuf-dev ca-certificates procps \
  qemu-utils libnbd-bin fio libvirt-daemon libvirt-clients openipmi ipmitool \
  libvirt-daemon-driver-qemu qemu-system-x86 gdisk nftables \
  ceph-mon ceph-osd ceph-mgr ceph-common librados-dev librbd-dev gcc libc6-dev \
  grub-common grub-pc-bin grub-efi-amd64-bin xorriso mtools ovmf qemu-block-extra iptables

# CEPH=1 (the default) builds and tests with Ceph: the "ceph" build tag turns
# the RBD backend on, "pacific" makes go-ceph match Debian 12's libraries.
# `make CEPH=0 ...` builds without Ceph (no cgo libraries needed); make lint
# vets both. GOFLAGS carries the tags so every go command of a target, and
# the ones tests run themselves (go list, go build), see the same build.
CEPH ?= 1
ifeq ($(CEPH),1)
export GOFLAGS := $(strip $(GOFLAGS) -tags=ceph,pacific)
endif

.PHONY: chaos iso iso-deps test-appliance deb bench-failover bench-rbd bench-migration bench-replication bench-scale proto-check all deps apt-deps go-tools build proto test test-e2e demo bench bench-control lint fuzz clean

all: build

deps: apt-deps go-tools

apt-deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@# libvirtd's QEMU driver refuses to start without this user.
	@id libvirt-qemu >/dev/null 2>&1 || useradd --system libvirt-qemu

go-tools: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc $(TOOLS)/grpcurl

$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(TOOLS)/grpcurl:
	GOBIN=$(TOOLS) $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# VERSION is what the binaries report (internal/version); "dev" outside a
# git checkout. Override with make build VERSION=...
VERSION ?= $(shell git describe --always --dirty --tags 2>/dev/null || echo dev)
LDFLAGS := -X github.com/tandemhci/tandem/internal/version.Version=$(VERSION)

build:
	@mkdir -p bin
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/tandemd ./cmd/tandem

proto: apt-deps $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	protoc -I proto -I /usr/include --plugin=protoc-gen-go=$(TOOLS)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(TOOLS)/protoc-gen-go-grpc \
	  --go_out=. --go_opt=module=github.com/tandemhci/tandem \
	  --go-grpc_out=. --go-grpc_opt=module=github.com/tandemhci/tandem \
	  proto/tandem/v1/*.proto

# proto-check regenerates the API code and fails if the committed copy differs
# (doc.go there is hand-written: the package comment and owner).
proto-check: apt-deps $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	protoc -I proto -I /usr/include --plugin=protoc-gen-go=$(TOOLS)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(TOOLS)/protoc-gen-go-grpc \
	  --go_out=$$tmp --go_opt=module=github.com/tandemhci/tandem \
	  --go-grpc_out=$$tmp --go-grpc_opt=module=github.com/tandemhci/tandem proto/tandem/v1/*.proto && \
	diff -rq -x doc.go $$tmp/proto/tandemv1 proto/tandemv1 || { echo "generated code in proto/ is stale: run 'make proto' and commit"; exit 1; }

test: deps build proto-check lint
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	@# -timeout bounds each package against a hang, not a speed: e2e takes
	@# about 30 minutes on an idle 2-CPU machine and over 50 under heavy load,
	@# where it is only slower.
	$(GO) test -count=1 -timeout 75m ./...
ifeq ($(CEPH),1)
	@# The RBD backend's build without Ceph (ErrNotBuilt).
	GOFLAGS= $(GO) test -count=1 ./blockstore/rbd/
endif

# test-e2e runs only the end-to-end tests (root: network namespaces,
# libvirtd, QEMU TCG); RUN=Pattern picks some, e.g. make test-e2e RUN=TestOperator
test-e2e: deps build
	$(GO) test -count=1 -timeout 20m $(if $(RUN),-run '$(RUN)') ./e2e/

# chaos runs SCHEDULES seeded fault schedules (package chaos, issue 16)
# against a 3-node netns cluster and writes bench/results/chaos.{md,json}.
# SEED is the first schedule's seed (default: a random one, printed); a
# failure prints the one-line command that replays it. KEEP=DIR (default
# .cache/chaos-keep) keeps the history and every node's log of schedules
# with anomalies, as the only record of a run a replay may not reproduce
# (CHAOS_KEEP=DIR without make); CHAOS_LOG=info logs
# every fault as it is applied and healed. DISK=1 (the default) puts the
# nodes' volume files on internal/faultfs: disk errors and slow I/O join the
# faults, and a power-off drops what was not synced; DISK=0 leaves them out.
# VMS=1 (the default) runs that many test guests (TCG, libvirtd on every
# node): kill of QEMU and of libvirtd and live migration join the faults,
# and the VM checkers run; VMS=0 leaves them out. APPEND=1 adds this run's
# schedules to the report already there instead of replacing it, so a long
# run can be made in several sittings with consecutive seeds (each sitting
# is listed with its commit; a seed already reported is refused). The report
# is rewritten after every schedule; FOR=90m ends a sitting after the
# schedule running when 90 minutes have passed, and so does Ctrl-C (a
# second one kills at once, leaving namespaces and mounts behind). One exact,
# hand-written schedule runs without make and without a report:
#   CHAOS_SCHEDULE='isolate(primary(v0))@2s+22s' go test -count=1 -v -run 'TestChaosSchedules$' ./chaos/
# (the format and primary(VOLUME) are in chaos/doc.go).
SCHEDULES ?= 10
DISK ?= 1
VMS ?= 1
APPEND ?= 0
FOR ?=
SEED ?= $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
KEEP ?= $(CURDIR)/.cache/chaos-keep
chaos: deps
	@echo "chaos: $(SCHEDULES) schedules from seed $(SEED)"
	CHAOS_PROFILE=long CHAOS_SCHEDULES=$(SCHEDULES) CHAOS_SEED=$(SEED) CHAOS_DISK=$(DISK) CHAOS_VMS=$(VMS) CHAOS_APPEND=$(APPEND) CHAOS_FOR=$(FOR) CHAOS_KEEP=$(KEEP) CHAOS_REPORT=bench/results/chaos \
	  $(GO) test -count=1 -timeout 0 -v -run 'TestChaosSchedules$$' ./chaos/

fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzParseJoinToken -fuzztime=30s ./internal/pki/
	$(GO) test -run='^$$' -fuzz=FuzzParseAdminToken -fuzztime=30s ./internal/pki/
	$(GO) test -run='^$$' -fuzz=FuzzParse -fuzztime=30s ./internal/config/
	$(GO) test -run='^$$' -fuzz=FuzzMetaCommand -fuzztime=30s ./consensus/
	$(GO) test -run='^$$' -fuzz=FuzzStream -fuzztime=30s ./consensus/raftnet/
	$(GO) test -run='^$$' -fuzz=FuzzReadFrame -fuzztime=30s ./replication/
	$(GO) test -run='^$$' -fuzz=FuzzRequestHeader -fuzztime=30s ./blockstore/nbd/
	$(GO) test -run='^$$' -fuzz=FuzzOptionNegotiation -fuzztime=30s ./blockstore/nbd/
	$(GO) test -run='^$$' -fuzz=FuzzTLSNegotiation -fuzztime=30s ./blockstore/nbd/
	$(GO) test -run='^$$' -fuzz=FuzzDecodeDatagram -fuzztime=30s ./internal/guest/
	$(GO) test -run='^$$' -fuzz=FuzzReadISOFile -fuzztime=30s ./internal/guest/
	$(GO) test -run='^$$' -fuzz=FuzzName -fuzztime=30s ./internal/validate/

# guest-image builds the VM test guest (kernel + initramfs with the guest
# agent as /init) into .cache/guest; tests build it on demand too.
.PHONY: guest-image
guest-image: deps
	GO=$(GO) scripts/build-guest-image.sh

lint: $(TOOLS)/staticcheck
	$(GO) vet ./...
ifeq ($(CEPH),1)
	@# The build without Ceph must keep compiling too.
	GOFLAGS= $(GO) vet ./...
endif
	$(TOOLS)/staticcheck ./...
	@# The long-running targets are not run by make test: check at least
	@# that the shell commands make gives them parse.
	@for t in chaos bench-scale bench-replication; do \
	  $(MAKE) -s -n $$t SEED=1 | sh -n || { echo "make $$t: its recipe is not valid shell" >&2; exit 1; }; done

# deb builds bin/tandem_<version>_amd64.deb: hardened binaries (PIE, full
# RELRO, stripped), the systemd unit, the sample config, man pages and
# shell completion (deploy/build-deb.sh). lintian checks it when installed.
DEB_GOFLAGS := -buildmode=pie -trimpath
DEB_LDFLAGS := -s -w -linkmode=external -extldflags=-Wl,-z,relro,-z,now $(LDFLAGS)
DEB_OUT ?= bin
deb: apt-deps
	@mkdir -p build/deb-bin
	$(GO) build $(DEB_GOFLAGS) -ldflags "$(DEB_LDFLAGS)" -o build/deb-bin/ ./cmd/tandemd ./cmd/tandem
	@deb=$$(deploy/build-deb.sh build/deb-bin $(DEB_OUT) "$(VERSION)") && echo "built $$deb" && \
	if command -v lintian >/dev/null; then lintian --tag-display-limit 0 "$$deb"; fi

# iso builds build/tandem-<version>-amd64.iso, the appliance installer: a
# hybrid image (CD or USB, BIOS or UEFI) of Debian 12 from this machine's
# apt mirror, with the .deb and tandem-install (deploy/iso/build-iso.sh).
# The downloaded packages and the package root are kept in build/_iso/cache.
ISO_PKGS := debootstrap xorriso grub-pc-bin grub-efi-amd64-bin grub-common mtools squashfs-tools dosfstools ovmf openssh-client
ISO := build/tandem-$(VERSION)-amd64.iso
iso-deps: apt-deps
	@missing=""; for p in $(ISO_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

iso: iso-deps
	@mkdir -p build/deb-bin build/iso-bin
	$(GO) build $(DEB_GOFLAGS) -ldflags "$(DEB_LDFLAGS)" -o build/deb-bin/ ./cmd/tandemd ./cmd/tandem ./cmd/tandem-install
	@rm -f build/iso-bin/*.deb
	@deb=$$(deploy/build-deb.sh build/deb-bin build/iso-bin "$(VERSION)") && \
	time deploy/iso/build-iso.sh "$$deb" build/deb-bin/tandem-install $(ISO) "$(VERSION)"

# test-appliance installs the ISO into a QEMU (TCG) machine that joins a
# two-node cluster in network namespaces (e2e/appliance_test.go); make
# test skips that test, as it needs the ISO.
test-appliance: deps iso
	TANDEM_ISO=$(CURDIR)/$(ISO) TANDEM_ISO_VERSION=$(VERSION) $(GO) test -count=1 -timeout 45m -run 'TestAppliance' -v ./e2e/

demo: deps build
	$(GO) run ./cmd/tandem-demo -bin $(CURDIR)/bin

bench: bench-control bench-replication bench-migration bench-failover bench-rbd

bench-control: deps build
	$(GO) run ./bench/control -bin $(CURDIR)/bin -out bench/results

bench-replication: deps build
	$(GO) run ./bench/replication -bin $(CURDIR)/bin -out bench/results

bench-migration: deps build
	$(GO) run ./bench/migration -bin $(CURDIR)/bin -out bench/results

bench-failover: deps build
	$(GO) run ./bench/failover -bin $(CURDIR)/bin -out bench/results

# bench-rbd: fio's rbd engine against Tandem's NBD export of an RBD volume
# (and the replicated and qemu-nbd references) on a micro Ceph, then the
# failover of a VM on RBD; writes bench/results/rbd.{md,json}.
bench-rbd: deps build
	$(GO) run ./bench/rbd -bin $(CURDIR)/bin -out bench/results

# bench-scale: N volumes (BENCH_VOLUMES, default 1000) on 3 netns nodes;
# writes bench/results/scale.{md,json}.
bench-scale: deps build
	BENCH_VOLUMES=$(BENCH_VOLUMES) $(GO) run ./bench/scale -bin $(CURDIR)/bin -out bench/results

clean:
	rm -rf bin build .tools
