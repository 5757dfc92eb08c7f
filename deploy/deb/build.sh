#!/usr/bin/env bash
# Debian packages of drp-agent and drp from built binaries:
#   bash deploy/deb/build.sh [PROFILE_DIR] [OUT]
# PROFILE_DIR holds the binaries (default $CARGO_TARGET_DIR/release, after
# `cargo build --release --bins`); OUT receives drp-agent_<version>_<arch>.deb
# and drp_<version>_<arch>.deb (default target/debian). Each package has its
# binary, man pages and bash/zsh/fish completions generated from the binary
# itself; drp-agent also the systemd service and timer, the example policies
# (/etc/drp/policy.example.yaml and /usr/share/doc/drp-agent/examples) and a
# postinst making the `drp` system user and its state folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-${CARGO_TARGET_DIR:-target}/release}
OUT=${2:-target/debian}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ARCH=$(dpkg --print-architecture)
mkdir -p "$OUT"
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

package() { # NAME BINARY SUMMARY DEPENDS RECOMMENDS
    local name=$1 bin=$2 summary=$3 depends=$4 recommends=$5
    local root=$STAGE/$name
    install -D -m 0755 --strip "$BIN/$bin" "$root/usr/bin/$bin"
    "$BIN/$bin" -q generate-assets --out "$STAGE/assets-$bin"
    install -d "$root/usr/share/man/man1"
    for page in "$STAGE/assets-$bin"/man/*.1; do
        gzip -9n < "$page" > "$root/usr/share/man/man1/$(basename "$page").gz"
    done
    install -D -m 0644 "$STAGE/assets-$bin/completions/$bin.bash" "$root/usr/share/bash-completion/completions/$bin"
    install -D -m 0644 "$STAGE/assets-$bin/completions/_$bin" "$root/usr/share/zsh/vendor-completions/_$bin"
    install -D -m 0644 "$STAGE/assets-$bin/completions/$bin.fish" "$root/usr/share/fish/vendor_completions.d/$bin.fish"
    install -D -m 0644 README.md "$root/usr/share/doc/$name/README.md"
    install -d "$root/DEBIAN"
    cat > "$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $VERSION
Architecture: $ARCH
Maintainer: drp maintainers <drp@localhost>
Section: admin
Priority: optional
Depends: $depends
Recommends: $recommends
Description: $summary
 drp makes a disaster-recovery plan run: compressed, checksummed, encrypted
 database exports and snapshots to NAS, SFTP and S3 targets, kept by
 retention; runbooks and drills measured against the RTO and RPO.
CONTROL
}

package drp-agent drp-agent "drp host agent: backups, archiving and verified restores" \
    "libc6 (>= 2.34)" "openssh-client, postgresql-client, mariadb-client"
root=$STAGE/drp-agent
install -D -m 0644 deploy/systemd/drp-agent.service "$root/lib/systemd/system/drp-agent.service"
install -D -m 0644 deploy/systemd/drp-agent.timer "$root/lib/systemd/system/drp-agent.timer"
install -D -m 0644 policies/db-server.yaml "$root/etc/drp/policy.example.yaml"
install -d "$root/usr/share/doc/drp-agent/examples"
cp policies/*.yaml "$root/usr/share/doc/drp-agent/examples/"
echo /etc/drp/policy.example.yaml > "$root/DEBIAN/conffiles"
install -m 0755 deploy/deb/drp-agent.postinst "$root/DEBIAN/postinst"
install -m 0755 deploy/deb/drp-agent.prerm "$root/DEBIAN/prerm"

package drp drp "drp coordinator: restores, runbooks, drills and RTO/RPO reports" \
    "libc6 (>= 2.34)" "openssh-client, chromium"
install -d "$STAGE/drp/usr/share/doc/drp/runbooks"
cp runbooks/*.yaml "$STAGE/drp/usr/share/doc/drp/runbooks/"

for name in drp-agent drp; do
    echo "Installed-Size: $(du -sk --exclude=DEBIAN "$STAGE/$name" | cut -f1)" >> "$STAGE/$name/DEBIAN/control"
    dpkg-deb --root-owner-group -Zgzip --build "$STAGE/$name" "$OUT/${name}_${VERSION}_${ARCH}.deb" >/dev/null
    echo "$OUT/${name}_${VERSION}_${ARCH}.deb"
done
