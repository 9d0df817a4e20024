#!/usr/bin/env bash
# Builds the test guest: a Debian kernel and a small initramfs whose /init is
# the Tandem guest agent (cmd/tandem-guest-agent), into
# .cache/guest/{vmlinuz,initrd.img}. The host's own kernel is never touched:
# the packages are fetched with `apt-get download` and unpacked with dpkg-deb.
# Idempotent: when both outputs are newer than this script and the agent's
# sources, it does nothing. Concurrent callers (parallel test packages) are
# serialised with flock.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/.cache/guest
GO=${GO:-$("$root/scripts/ensure-go.sh")}
mkdir -p "$out"

exec 9>"$out/.lock"
flock 9

# Modules in load order (each after its dependencies, checked with modinfo
# -F depends): virtio-pci transport, virtio-blk, then virtio-net, then
# virtio-console (the guest agent's virtio-serial port), and efivarfs (the
# agent's UEFI variable, tandem.efivar=on; it depends on nothing).
modules=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk failover net_failover virtio_net virtio_console efivarfs)

uptodate() {
	[ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] || return 1
	local newer
	newer=$(find "$root/scripts/build-guest-image.sh" "$root/go.mod" "$root/cmd/tandem-guest-agent" "$root/internal/guest" \
		-newer "$out/initrd.img" -type f \( -name '*.go' ! -name '*_test.go' -o -name build-guest-image.sh -o -name go.mod \) -print -quit 2>/dev/null)
	[ -z "$newer" ]
}
if uptodate; then
	exit 0
fi

need=()
for p in cpio gzip; do command -v "$p" >/dev/null || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
	echo "installing ${need[*]}" >&2
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Downloaded packages are kept, so a change to the agent alone re-packs the
# initramfs without fetching 70 MB again.
debs=$out/debs
mkdir -p "$debs"
kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
kernel_pkg=$(kpkg || true)
if [ -z "$kernel_pkg" ]; then
	apt-get update -qq >&2
	kernel_pkg=$(kpkg)
fi
[ -n "$kernel_pkg" ] || { echo "cannot resolve the kernel package behind linux-image-amd64" >&2; exit 1; }
fetch() { # $1: package name; downloads into $debs unless a .deb is there
	compgen -G "$debs/${1}_*.deb" >/dev/null && return 0
	# apt-get download runs as _apt where it can; a root-owned dir makes it
	# warn and fall back to root, which is fine.
	if ! (cd "$debs" && apt-get download -q "$1" >&2 2>/dev/null); then
		apt-get update -qq >&2
		(cd "$debs" && apt-get download -q "$1" >&2)
	fi
}
fetch "$kernel_pkg"
fetch busybox-static

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for d in "$debs/${kernel_pkg}"_*.deb "$debs"/busybox-static_*.deb; do
	dpkg-deb -x "$d" "$tmp/pkg"
done
kver=${kernel_pkg#linux-image-}
kdir=$tmp/pkg/lib/modules/$kver
[ -d "$kdir" ] || { echo "no modules for $kver in $kernel_pkg" >&2; exit 1; }

rootfs=$tmp/rootfs
mkdir -p "$rootfs"/{bin,dev,proc,sys,tmp,etc,lib/modules/"$kver"}
: >"$rootfs/etc/tandem-modules"
for m in "${modules[@]}"; do
	f=$(find "$kdir/kernel" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" | head -n1)
	[ -n "$f" ] || { echo "module $m not found in $kernel_pkg" >&2; exit 1; }
	# finit_module needs a plain ELF unless the kernel decompresses itself;
	# decompress here so either works.
	case $f in
	*.xz) xz -dc "$f" >"$rootfs/lib/modules/$kver/$m.ko" ;;
	*.zst) zstd -qdc "$f" >"$rootfs/lib/modules/$kver/$m.ko" ;;
	*) cp "$f" "$rootfs/lib/modules/$kver/$m.ko" ;;
	esac
	echo "/lib/modules/$kver/$m.ko" >>"$rootfs/etc/tandem-modules"
done

cp "$tmp/pkg/bin/busybox" "$rootfs/bin/busybox"
for a in sh ip ls cat mount dmesg hexdump; do ln -s busybox "$rootfs/bin/$a"; done
# The kernel opens /dev/console for init before devtmpfs is mounted; the agent
# reopens it too, so a failing mknod (no privilege) costs only early output.
mknod -m 600 "$rootfs/dev/console" c 5 1 2>/dev/null || true

(cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 "$GO" build -trimpath -ldflags='-s -w' \
	-o "$rootfs/init" ./cmd/tandem-guest-agent)

(cd "$rootfs" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet | gzip -9n) >"$tmp/initrd.img"
cp "$tmp/pkg/boot/vmlinuz-$kver" "$tmp/vmlinuz"
# Rename into place, initrd last: its mtime is the up-to-date stamp.
mv "$tmp/vmlinuz" "$out/vmlinuz"
mv "$tmp/initrd.img" "$out/initrd.img"
echo "guest image: $out/vmlinuz ($kver), $out/initrd.img ($(du -h "$out/initrd.img" | cut -f1))" >&2
