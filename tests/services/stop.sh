#!/usr/bin/env bash
# Stops the services started by start.sh and removes their folder.
set -uo pipefail
DIR=${1:?usage: tests/services/stop.sh FOLDER}
[ -d "$DIR" ] || exit 0
su postgres -s /bin/sh -c "/usr/lib/postgresql/15/bin/pg_ctl -D '$DIR/pg/data' -m immediate stop" >/dev/null 2>&1
umount "$DIR/btrfs" 2>/dev/null
if [ -d "$DIR/fleet" ]; then
    su postgres -s /bin/sh -c "/usr/lib/postgresql/15/bin/pg_ctl -D '$DIR/fleet/h2/pg/data' -m immediate stop" >/dev/null 2>&1
    for pidfile in "$DIR"/fleet/h*/sshd.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
    done
    while read -r ns; do ip netns del "$ns" 2>/dev/null; done < "$DIR/fleet/namespaces"
    [ -f "$DIR/fleet/bridge" ] && ip link del "$(cat "$DIR/fleet/bridge")" 2>/dev/null
fi
for pidfile in "$DIR/my/pid" "$DIR/garage/pid" "$DIR/ssh/pid" "$DIR/moto.pid" "$DIR/dns/pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
done
# Anything still running from this folder (a server started by a test itself).
pkill -f -- "$DIR/" 2>/dev/null
sleep 0.5
rm -rf "$DIR"
