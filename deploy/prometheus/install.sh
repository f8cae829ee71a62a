#!/usr/bin/env bash
# Install Prometheus, promtool and amtool from Debian's packages into
# .cache/prometheus/ (nothing outside the repository, no root install): the
# tests in tests/config/ and `make test` run them from .cache/prometheus/bin/.
#
#   deploy/prometheus/install.sh       # idempotent: does nothing once installed
#
# The .debs (prometheus, prometheus-alertmanager) are fetched with
# `apt-get download` and unpacked with `dpkg -x`: no dpkg database entry, no
# service, no system user. `apt-get update` runs only when the download fails
# for lack of package lists (a fresh machine or container); that needs root,
# as in CI.
#
# Debian bookworm ships Prometheus 2.42 and Alertmanager 0.25;
# docker-compose.yml runs the upstream 3.x and 0.28 images. The rules and
# configs in config/ use nothing that differs between them (docs/operations.md §5).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dest="${PROMETHEUS_CACHE:-$root/.cache/prometheus}"
packages=(prometheus prometheus-alertmanager)
tools=(prometheus promtool amtool)

installed() {
    local tool
    for tool in "${tools[@]}"; do
        [[ -x "$dest/bin/$tool" ]] || return 1
    done
}
installed && exit 0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# As root, apt-get hands downloads to the unprivileged _apt user, which must
# be able to write into the folder.
chmod 0777 "$tmp"

download() {
    (cd "$tmp" && apt-get download -q "${packages[@]}") >"$tmp/download.log" 2>&1
}

if ! download; then
    if grep -qiE 'unable to locate|no candidate|has no installation candidate|can.t select' "$tmp/download.log"; then
        echo "install.sh: no package lists for ${packages[*]} yet; running apt-get update" >&2
        apt-get update -q >&2
        download || { cat "$tmp/download.log" >&2; exit 1; }
    else
        cat "$tmp/download.log" >&2
        exit 1
    fi
fi

# Unpack into a fresh folder, then move it into place: an interrupted run
# never leaves a half-unpacked tree that looks installed.
staging="$dest.partial.$$"
rm -rf "$staging"
mkdir -p "$staging/bin"
: >"$staging/VERSIONS"
for package in "${packages[@]}"; do
    deb=$(find "$tmp" -maxdepth 1 -name "${package}_*.deb" -print -quit)
    [[ -n "$deb" ]] || { echo "install.sh: apt-get download left no ${package}_*.deb" >&2; exit 1; }
    dpkg -x "$deb" "$staging/root"
    echo "$package $(dpkg-deb -f "$deb" Version)" >>"$staging/VERSIONS"
done
for tool in "${tools[@]}"; do
    [[ -x "$staging/root/usr/bin/$tool" ]] || { echo "install.sh: no usr/bin/$tool in ${packages[*]}" >&2; exit 1; }
    ln -s "../root/usr/bin/$tool" "$staging/bin/$tool"
done

rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$staging" "$dest"
echo "install.sh: $(tr '\n' ' ' <"$dest/VERSIONS")in $dest/bin" >&2
