#!/usr/bin/env bash
# Installs what the test suite needs, only when missing: Debian packages for
# PostgreSQL, MariaDB, OpenSSH, SQLite and BIND, and Garage (S3) built with cargo
# into a cache outside the clone so it is built once per machine.
set -euo pipefail

CACHE=${DRP_CACHE:-/var/cache/drp}
GARAGE_VERSION=${DRP_GARAGE_VERSION:-2.5.0}
mkdir -p "$CACHE"

need=()
command -v /usr/lib/postgresql/15/bin/initdb >/dev/null || need+=(postgresql)
command -v pg_dump >/dev/null || need+=(postgresql-client)
command -v mariadbd >/dev/null || command -v /usr/sbin/mariadbd >/dev/null || need+=(mariadb-server)
command -v mariadb-dump >/dev/null || need+=(mariadb-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v ip >/dev/null || need+=(iproute2)
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v promtool >/dev/null || need+=(prometheus)
command -v python3 >/dev/null || need+=(python3)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v mkfs.btrfs >/dev/null || need+=(btrfs-progs)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v qemu-io >/dev/null || need+=(qemu-utils)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v openssl >/dev/null || need+=(openssl)
command -v zstd >/dev/null || need+=(zstd)
command -v pkill >/dev/null || need+=(procps)
command -v mariadb-binlog >/dev/null || need+=(mariadb-client)
command -v runuser >/dev/null || need+=(util-linux)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v named >/dev/null || [ -x /usr/sbin/named ] || need+=(bind9)
command -v tsig-keygen >/dev/null || [ -x /usr/sbin/tsig-keygen ] || need+=(bind9-utils)
command -v nsupdate >/dev/null || need+=(bind9-dnsutils)
command -v dig >/dev/null || need+=(bind9-dnsutils)
command -v supervisord >/dev/null || need+=(supervisor)
command -v lvcreate >/dev/null || [ -x /usr/sbin/lvcreate ] || need+=(lvm2)
command -v restic >/dev/null || need+=(restic)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The EC2/RDS API emulator (no AWS account is reachable from tests).
if ! command -v ansible-playbook >/dev/null; then
    echo "setup: installing ansible-core from PyPI"
    python3 -m pip install --quiet 'ansible-core>=2.16,<2.18'
fi
if ! python3 -c 'import moto.server' 2>/dev/null; then
    echo "setup: installing moto[server] from PyPI"
    python3 -m pip install --quiet 'moto[server]'
fi

if [ ! -x "$CACHE/tools/bin/garage" ]; then
    echo "setup: building garage $GARAGE_VERSION (once per machine, about 15 minutes on 2 cores)"
    cargo install garage --version "$GARAGE_VERSION" --locked --root "$CACHE/tools" --quiet
fi
echo "setup: all tools present"
