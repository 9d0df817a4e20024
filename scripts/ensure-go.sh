#!/usr/bin/env bash
# Prints the path of a Go toolchain able to build this module (the version in
# go.mod), installing one if needed. A fresh Debian 12 ships Go 1.19, too old
# to build us and to switch toolchains itself, so we use it only to fetch the
# official toolchain module from the Go module proxy.
set -euo pipefail
want=$(awk '/^go [0-9]/ {print $2; exit}' "$(dirname "$0")/../go.mod")
ok() { # $1: go binary; true if it is at least $want
	local v
	v=$("$1" env GOVERSION 2>/dev/null | sed 's/^go//') || return 1
	[ "$(printf '%s\n%s\n' "$want" "$v" | sort -V | head -n1)" = "$want" ]
}
for g in "${GO:-}" /usr/local/go/bin/go "/usr/local/go-$want/bin/go" "$(command -v go 2>/dev/null || true)"; do
	if [ -n "$g" ] && [ -x "$g" ] && ok "$g"; then echo "$g"; exit 0; fi
done
mod="golang.org/toolchain@v0.0.1-go${want}.linux-$(dpkg --print-architecture)"
boot=$(command -v go 2>/dev/null || true)
if [ -z "$boot" ]; then
	echo "installing Debian's golang-go to bootstrap Go $want" >&2
	apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends golang-go ca-certificates >&2
	boot=$(command -v go)
fi
echo "fetching Go $want ($mod) from the module proxy" >&2
dir=$(cd /tmp && GOFLAGS= GO111MODULE=on "$boot" mod download -json "$mod" | awk -F'"' '/"Dir":/ {print $4}')
if [ -z "$dir" ] || [ ! -f "$dir/bin/go" ]; then
	echo "could not obtain Go $want; install it at /usr/local/go" >&2
	exit 1
fi
# Module zips keep no file modes: install a copy and make its tools executable.
dest=${TANDEM_GOROOT:-/usr/local/go}
if [ -e "$dest" ]; then dest="$dest-$want"; fi
rm -rf "$dest.tmp" && cp -r "$dir" "$dest.tmp" && chmod -R u+w "$dest.tmp"
chmod +x "$dest.tmp"/bin/* "$dest.tmp"/pkg/tool/*/*
rm -rf "$dest" && mv "$dest.tmp" "$dest"
echo "installed Go $want at $dest" >&2
echo "$dest/bin/go"
