#!/bin/bash
# build-deb.sh BIN_DIR OUT_DIR VERSION: builds tandem_<debversion>_amd64.deb
# from the binaries in BIN_DIR (make build) into OUT_DIR and prints its path.
# VERSION is the binaries' version (git describe); a Debian version must
# start with a digit, so an untagged build becomes 0~g<hash>.
set -euo pipefail

bin=$1 out=$2 version=$3
here=$(cd "$(dirname "$0")" && pwd)

case $version in
v[0-9]*) debver=${version#v} ;;
[0-9]*) debver=$version ;;
*) debver="0~g$version" ;;
esac
# A hyphen would start a Debian revision; git describe's "-N-gHASH" and
# "-dirty" become "+N.gHASH" and "+dirty".
debver=${debver//-/+}

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"

install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
	"$root/usr/share/doc/tandem/examples" "$root/usr/share/man/man1" "$root/usr/share/man/man8" \
	"$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions"
install -m 0755 "$bin/tandemd" "$bin/tandem" "$root/usr/bin/"
install -m 0644 "$here/tandemd.service" "$root/lib/systemd/system/"
install -m 0644 "$here/tandem.yaml" "$root/usr/share/doc/tandem/examples/tandem.yaml"
install -m 0644 "$here/libvirtd-tls.conf" "$here/qemu-migrate-tls.conf" "$root/usr/share/doc/tandem/examples/"
install -m 0644 "$here/debian/copyright" "$root/usr/share/doc/tandem/copyright"

# Man pages and completions come from the CLI itself, so they match it.
"$bin/tandem" man "$root/usr/share/man/man1"
install -m 0644 "$here/tandemd.8" "$root/usr/share/man/man8/"
gzip -9n "$root"/usr/share/man/man1/*.1 "$root"/usr/share/man/man8/*.8
"$bin/tandem" completion bash >"$root/usr/share/bash-completion/completions/tandem"
"$bin/tandem" completion zsh >"$root/usr/share/zsh/vendor-completions/_tandem"

date=$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || date +%s)}")
printf 'tandem (%s) unstable; urgency=medium\n\n  * Built from %s.\n\n -- Tandem developers <maintainers@tandemhci.org>  %s\n' \
	"$debver" "$version" "$date" | gzip -9n >"$root/usr/share/doc/tandem/changelog.gz"

for s in postinst prerm postrm; do
	install -m 0755 "$here/debian/$s" "$root/DEBIAN/$s"
done
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$debver/" -e "s/@SIZE@/$size/" "$here/debian/control.in" >"$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb="$out/tandem_${debver}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
