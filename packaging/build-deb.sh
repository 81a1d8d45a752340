#!/usr/bin/env bash
# Builds build/package/blockmigrate_<version>_amd64.deb from packaging/ and the build outputs.
#
#   packaging/build-deb.sh          (./build.sh package runs it after building everything)
#
# The version is the top entry of packaging/debian/changelog (Directory.Build.props reads the
# same entry for the assemblies).  Needs: the native part already built into build/native/
# (libblockmigrate.so.N with its SONAME, nbdkit-blockmigrate-filter.so), dotnet, dpkg-dev,
# nbdkit and nbdkit-plugin-dev (tools/install-deps.sh installs them).
#
# Steps: NativeAOT publish of the CLI (fails on any trim/AOT warning) -> stage the file tree
# under build/package/work/debian/blockmigrate -> strip -> shlibs/triggers -> dpkg-shlibdeps +
# dpkg-gencontrol (Depends, Installed-Size) -> md5sums -> dpkg-deb --root-owner-group.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(dpkg-parsechangelog -l packaging/debian/changelog -STimestamp)}

die() { echo "build-deb: $*" >&2; exit 1; }

for tool in dotnet dpkg-deb dpkg-gencontrol dpkg-shlibdeps dpkg-parsechangelog nbdkit readelf strip; do
  command -v "$tool" >/dev/null || die "missing $tool (run tools/install-deps.sh)"
done

pkg=blockmigrate
version=$(dpkg-parsechangelog -l packaging/debian/changelog -SVersion)
upstream=${version#*:}; upstream=${upstream%-*}
arch=$(dpkg --print-architecture)
[ "$arch" = amd64 ] || die "only amd64 is packaged (this is $arch)"
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)

# --- native parts, built by cmake into build/native (./build.sh builds them) -------------
native=build/native
filter=$native/nbdkit-blockmigrate-filter.so
[ -f "$filter" ] || die "$filter is missing: build the native part first (./build.sh, or cmake -S native -B build/native && cmake --build build/native)"
lib=""
for f in "$native"/libblockmigrate.so.*; do
  [ -f "$f" ] && [ ! -L "$f" ] && lib=$f && break
done
[ -n "$lib" ] || die "$native/libblockmigrate.so.<N> is missing (a real file, not only the libblockmigrate.so link): build the native part first, with VERSION/SOVERSION set in CMake"
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ "$soname" == libblockmigrate.so.* ]] || die "$lib has no SONAME libblockmigrate.so.N (set SOVERSION in native/CMakeLists.txt)"
somajor=${soname#libblockmigrate.so.}

# The filter is tied to the exact nbdkit it was compiled against: nbdkit refuses a filter
# whose _version string differs from its own ("filter is incompatible with this version").
# So Depends pins that upstream version; Debian revisions and security updates of it match.
nbdkit_version=$(pkg-config --modversion nbdkit 2>/dev/null || nbdkit --dump-config | sed -n 's/^version=//p')
[ -n "$nbdkit_version" ] || die "cannot tell the nbdkit version the filter was built against"
filterdir=$(nbdkit --dump-config | sed -n 's/^filterdir=//p')
[ -n "$filterdir" ] || die "nbdkit --dump-config shows no filterdir"

# --- the CLI, NativeAOT (fails on any trim/AOT warning; checks the version) -------------
packaging/publish-aot.sh || die "the NativeAOT publish failed"
publish=build/package/publish

# --- stage the tree ---------------------------------------------------------------------
work=build/package/work
root=$work/debian/$pkg
rm -rf "$work"
mkdir -p "$work/debian" "$root/DEBIAN"
cp packaging/debian/control packaging/debian/changelog "$work/debian/"

inst() { # inst MODE SRC DEST (DEST relative to the package root)
  install -D -m "$1" "$2" "$root/$3"
}
inst 0755 "$publish/blockmigrate" usr/bin/blockmigrate
inst 0644 "$filter" "${filterdir#/}/nbdkit-blockmigrate-filter.so"
inst 0644 "$lib" "usr/lib/$multiarch/$(basename "$lib")"
[ "$(basename "$lib")" = "$soname" ] || ln -s "$(basename "$lib")" "$root/usr/lib/$multiarch/$soname"

inst 0644 packaging/systemd/blockmigrate-receiver.service lib/systemd/system/blockmigrate-receiver.service
inst 0644 packaging/systemd/blockmigrate-shim@.service lib/systemd/system/blockmigrate-shim@.service
inst 0644 packaging/systemd/blockmigrate.tmpfiles usr/lib/tmpfiles.d/blockmigrate.conf
inst 0644 packaging/config/receiver.conf etc/blockmigrate/receiver.conf
mkdir -p "$root/etc/blockmigrate/disks"
inst 0644 packaging/config/disk.conf.example usr/share/doc/$pkg/examples/disk.conf
inst 0644 packaging/completion/blockmigrate usr/share/bash-completion/completions/blockmigrate
for page in packaging/man/*.[1-8]; do
  section=${page##*.}
  mkdir -p "$root/usr/share/man/man$section"
  gzip -9n <"$page" >"$root/usr/share/man/man$section/$(basename "$page").gz"
done
inst 0644 packaging/debian/copyright usr/share/doc/$pkg/copyright
mkdir -p "$root/usr/share/doc/$pkg"
gzip -9n <packaging/debian/changelog >"$root/usr/share/doc/$pkg/changelog.Debian.gz"
inst 0644 packaging/debian/lintian-overrides usr/share/lintian/overrides/$pkg

# Debian wants shipped ELF objects stripped (the AOT publish already strips the executable).
strip --remove-section=.comment "$root/usr/bin/blockmigrate"
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
  "$root/${filterdir#/}/nbdkit-blockmigrate-filter.so" "$root/usr/lib/$multiarch/$(basename "$lib")"

# --- control area -----------------------------------------------------------------------
for script in postinst prerm postrm; do
  install -m 0755 "packaging/debian/$script" "$root/DEBIAN/$script"
done
install -m 0644 packaging/debian/conffiles packaging/debian/triggers "$root/DEBIAN/"
# shlibs: what a package linking libblockmigrate.so.N must depend on
echo "libblockmigrate $somajor $pkg (>= $upstream)" >"$root/DEBIAN/shlibs"
chmod 0644 "$root/DEBIAN/shlibs"

substvars=$work/debian/$pkg.substvars
(
  cd "$work"
  # -x$pkg: our own library is in this package, not a dependency of it
  dpkg-shlibdeps -T"debian/$pkg.substvars" -x"$pkg" -l"debian/$pkg/usr/lib/$multiarch" \
    "debian/$pkg/usr/bin/blockmigrate" \
    "debian/$pkg/${filterdir#/}/nbdkit-blockmigrate-filter.so" \
    "debian/$pkg/usr/lib/$multiarch/$(basename "$lib")"
)
echo "nbdkit:Depends=nbdkit (>= $nbdkit_version), nbdkit (<< $nbdkit_version.~)" >>"$substvars"
echo "misc:Depends=" >>"$substvars"
(
  cd "$work"
  dpkg-gencontrol -p"$pkg" -T"debian/$pkg.substvars" -P"debian/$pkg"
)

(
  cd "$root"
  find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum >DEBIAN/md5sums
)
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control"
find "$root" -type d -exec chmod 0755 {} +
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

deb=build/package/${pkg}_${version#*:}_${arch}.deb
rm -f build/package/*.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "build-deb: $deb"
dpkg-deb --field "$deb" Package Version Depends Installed-Size >&2
