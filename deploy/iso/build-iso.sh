#!/bin/bash
# build-iso.sh DEB INSTALLER OUT VERSION: builds the Tandem appliance ISO
# (make iso). DEB is the tandem .deb (make deb), INSTALLER the tandem-install
# binary, OUT the ISO to write, VERSION what the menu shows.
#
# What goes in: Debian 12 packages only, fetched from the mirror this
# machine's apt already uses (read from its sources, no host is named
# here), plus the .deb and the installer. The root file system is made by
# debootstrap and apt, squashed (zstd) and booted by live-boot; grub-mkrescue
# makes the hybrid image (El Torito for CDs, an MBR for USB sticks, BIOS
# through grub-pc and UEFI through grub-efi). The installer copies the same
# squashfs onto the target disk, so the live and the installed system are one
# image.
#
# Environment: ISO_WORK (default build/_iso/work) holds the root file system
# and the staging tree; ISO_CACHE (default build/_iso/cache) keeps the
# downloaded .debs and the package root between builds, so a rebuild after a
# code change only reinstalls the .deb. Needs root (debootstrap, chroot,
# bind mounts); no loop device is used. The defaults sit under a directory
# whose name starts with "_", which go's ./... patterns skip: the trees hold
# bind mounts of /proc while a build runs, and a whole Debian root after.
set -euo pipefail

deb=$1 installer=$2 out=$3 version=$4
here=$(cd "$(dirname "$0")" && pwd)
work=$(realpath -m "${ISO_WORK:-build/_iso/work}")
cache=$(realpath -m "${ISO_CACHE:-build/_iso/cache}")
suite=bookworm
start=$(date +%s)

say() { printf 'iso: %s (%ds)\n' "$*" $(($(date +%s) - start)) >&2; }
die() { printf 'iso: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot)"
for f in "$deb" "$installer"; do [ -f "$f" ] || die "$f does not exist"; done
for c in debootstrap mksquashfs grub-mkrescue xorriso mformat; do
	command -v "$c" >/dev/null || die "$c not found: run 'make iso-deps'"
done

# apt_uri SUITE prints the first enabled "deb" source for SUITE with the main
# component, from one-line (.list) and deb822 (.sources) files alike.
apt_uri() {
	local want=$1 f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		awk -v s="$want" '$1 == "deb" {
			i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
			if ($(i+1) != s) next
			for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; exit }
		}' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk -v s="$want" '
		function flush() {
			if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " s " ") && (" " comps " ") ~ / main / && enabled != "no") { split(uris, u, " "); print u[1]; found = 1 }
			types = uris = suites = comps = enabled = ""
		}
		/^[ \t]*#/ { next }
		/^[ \t]*$/ { flush(); if (found) exit; next }
		{
			k = tolower($1); sub(/:$/, "", k); v = $0; sub(/^[^:]*:[ \t]*/, "", v)
			if (k == "types") types = v; else if (k == "uris") uris = v
			else if (k == "suites") suites = v; else if (k == "components") comps = v
			else if (k == "enabled") enabled = tolower(v)
		}
		END { if (!found) flush() }' "$f"
	done
}
mirror=$(apt_uri $suite | head -n1)
[ -n "$mirror" ] || die "no apt source for $suite main in /etc/apt/sources.list or /etc/apt/sources.list.d"
security=$(apt_uri $suite-security | head -n1)
updates=$(apt_uri $suite-updates | head -n1)
say "mirror $mirror${security:+, security $security}${updates:+, updates $updates}"

# The Debian packages of the appliance. Recommends are left out: each
# package named here is needed by the installer, tandemd or an operator.
pkgs=(
	linux-image-amd64 systemd systemd-sysv systemd-timesyncd udev dbus
	live-boot live-boot-initramfs-tools
	libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils ovmf qemu-block-extra
	xorriso
	ipmitool
	librados2 librbd1
	parted gdisk dosfstools e2fsprogs squashfs-tools eject
	grub-pc-bin grub-efi-amd64-bin grub2-common efibootmgr
	openssh-server ca-certificates iproute2 iputils-ping procps less nano kmod
)

# A build killed mid-way may have left bind mounts of /proc, /sys and /dev
# in its trees: unmount them before anything is deleted, and never delete
# across file systems.
unmount_under() {
	findmnt -rn -o TARGET | awk -v a="$1/" 'index($0, a) == 1' | sort -r | while read -r m; do umount -l "$m" || true; done
}
unmount_under "$cache"
unmount_under "$work"

mounts=()
cleanup() {
	local i
	for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bindmount() { mkdir -p "$2" && mount --bind "$1" "$2" && mounts+=("$2"); }

write_sources() {
	local r=$1
	{
		echo "deb $mirror $suite main"
		[ -z "$updates" ] || echo "deb $updates $suite-updates main"
		[ -z "$security" ] || echo "deb $security $suite-security main"
	} >"$r/etc/apt/sources.list"
}

# 1. The package root: debootstrap plus every Debian package, cached by the
# list of packages and the mirror (a new list or mirror rebuilds it).
key=$(printf '%s\n' "$mirror" "$security" "$updates" "${pkgs[@]}" | sha256sum | cut -c1-16)
base=$cache/base-$key
mkdir -p "$cache/archives" "$work"
if [ ! -e "$base/.complete" ]; then
	rm -rf --one-file-system "$cache"/base-* "$base.tmp"
	say "debootstrap $suite"
	debootstrap --variant=minbase --cache-dir="$cache/archives" $suite "$base.tmp" "$mirror" >"$work/debootstrap.log" 2>&1 ||
		{ tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed (log: $work/debootstrap.log)"; }
	write_sources "$base.tmp"
	# Nothing starts inside the chroot.
	printf '#!/bin/sh\nexit 101\n' >"$base.tmp/usr/sbin/policy-rc.d"
	chmod 0755 "$base.tmp/usr/sbin/policy-rc.d"
	bindmount /proc "$base.tmp/proc"
	bindmount /sys "$base.tmp/sys"
	bindmount /dev "$base.tmp/dev"
	bindmount "$cache/archives" "$base.tmp/var/cache/apt/archives"
	cp /etc/resolv.conf "$base.tmp/etc/resolv.conf" 2>/dev/null || true
	# Build-time speed, not the product's: dpkg skips its fsync per
	# unpacked file (a crashed build is thrown away anyway), and no
	# initramfs is made while packages install (the kernel's hook honours
	# INITRD=No; the initramfs-tools trigger then finds none to update).
	# One is made below, once, with every hook (live-boot's) in place.
	# Installing the kernel first and the rest after used to make three.
	echo force-unsafe-io >"$base.tmp/etc/dpkg/dpkg.cfg.d/zz-tandem-build"
	say "apt-get install ${#pkgs[@]} packages"
	{
		chroot "$base.tmp" apt-get update &&
			DEBIAN_FRONTEND=noninteractive INITRD=No chroot "$base.tmp" apt-get install -y --no-install-recommends "${pkgs[@]}"
	} >"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log" >&2; die "apt-get failed (log: $work/apt.log)"; }
	rm -f "$base.tmp/etc/dpkg/dpkg.cfg.d/zz-tandem-build"
	kver=$(ls "$base.tmp/lib/modules" | sort -V | tail -n1)
	say "initramfs for $kver"
	rm -f "$base.tmp/boot/initrd.img-$kver"
	chroot "$base.tmp" update-initramfs -c -k "$kver" >"$work/initramfs.log" 2>&1 ||
		{ tail -n 30 "$work/initramfs.log" >&2; die "update-initramfs failed (log: $work/initramfs.log)"; }
	gens=$(grep -c 'Generating /boot/initrd' "$work/apt.log" "$work/initramfs.log" | awk -F: '{n += $2} END {print n}')
	say "initramfs made $gens time(s)"
	cleanup
	mounts=()
	touch "$base.tmp/.complete"
	mv "$base.tmp" "$base"
fi

# 2. The appliance root: a copy of the package root with tandem, the
# installer and the live system's settings.
root=$work/rootfs
rm -rf --one-file-system "$root"
say "copy the package root"
cp -a "$base" "$root"
rm -f "$root/.complete"
bindmount /proc "$root/proc"
bindmount /sys "$root/sys"
bindmount /dev "$root/dev"
cp "$deb" "$root/tmp/tandem.deb"
say "install $(basename "$deb")"
DEBIAN_FRONTEND=noninteractive chroot "$root" dpkg -i /tmp/tandem.deb >"$work/dpkg.log" 2>&1 ||
	{ cat "$work/dpkg.log" >&2; die "dpkg -i tandem failed"; }
rm -f "$root/tmp/tandem.deb"
install -m 0755 "$installer" "$root/usr/sbin/tandem-install"
install -m 0644 "$here/tandem-install.service" "$here/tandem-firstboot.service" "$root/lib/systemd/system/"
cleanup
mounts=()

# Units: the installer runs only on the live system (its unit checks the
# kernel command line); the installed system's units are enabled by the
# installer. A preset file keeps first-boot presets from changing that.
# The live system has no SSH host keys (each installed machine gets its
# own), so sshd stays off there; the installer enables it on the target.
chroot "$root" systemctl enable tandem-install.service >/dev/null 2>&1
chroot "$root" systemctl disable ssh.service >/dev/null 2>&1
install -d "$root/etc/systemd/system-preset"
printf '%s\n' "enable tandem-install.service" "disable ssh.service" >"$root/etc/systemd/system-preset/10-tandem.preset"
# libvirtd listens on TLS with the node certificate once the node is in a
# cluster (tandem-firstboot enables libvirtd-tls.socket then).
cat "$root/usr/share/doc/tandem/examples/libvirtd-tls.conf" >>"$root/etc/libvirt/libvirtd.conf"

echo tandem-installer >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\ttandem-installer\n' >"$root/etc/hosts"
: >"$root/etc/resolv.conf"
# Each machine gets its own identity: the installer writes a machine id and
# SSH host keys into the installed system.
: >"$root/etc/machine-id"
rm -f "$root"/etc/ssh/ssh_host_* "$root/usr/sbin/policy-rc.d" "$root/var/lib/dbus/machine-id"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/tmp/* "$root"/var/log/*.log
echo "$version" >"$root/etc/tandem-release"

# 3. The image.
stage=$work/stage
rm -rf --one-file-system "$stage"
mkdir -p "$stage/live" "$stage/boot/grub"
kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n1)
initrd=$(ls "$root"/boot/initrd.img-* | sort -V | tail -n1)
cp "$kernel" "$stage/live/vmlinuz"
cp "$initrd" "$stage/live/initrd.img"
say "mksquashfs"
mksquashfs "$root" "$stage/live/filesystem.squashfs" -comp zstd -Xcompression-level 9 -noappend -no-progress >"$work/mksquashfs.log" 2>&1 || { cat "$work/mksquashfs.log" >&2; die "mksquashfs failed"; }
echo "$version" >"$stage/live/tandem-release"
sed "s/@VERSION@/$version/g" "$here/grub.cfg" >"$stage/boot/grub/grub.cfg"
say "grub-mkrescue"
mkdir -p "$(dirname "$out")"
rm -f "$out"
grub-mkrescue -o "$out" "$stage" -- -volid TANDEM_INSTALLER >"$work/grub-mkrescue.log" 2>&1 ||
	{ cat "$work/grub-mkrescue.log" >&2; die "grub-mkrescue failed"; }
say "built $out, $(du -m "$out" | cut -f1) MiB"
echo "$out"
