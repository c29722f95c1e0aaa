#!/bin/bash
# Install and start the LiteDesk relay server from this checkout on Debian 12 (or
# another systemd distribution with python3 >= 3.11).  Run as root:
#
#   bash conf/install-server.sh [--foreground]
#
# It installs, only when missing: the apt packages the build needs (python3-venv,
# and gcc, libc6-dev, python3-dev for evdev); a "litedesk" system user; the venv
# /opt/litedesk with this checkout pip-installed into it (re-running upgrades it);
# /var/lib/litedesk (0700, owned by litedesk) for the key pair and peer database;
# /etc/litedesk/relay.conf from conf/litedesk-relay.conf.example (an existing one
# is kept); /etc/systemd/system/litedesk-relay.service.  Then, when systemd is
# running, it enables and (re)starts the service and prints the client settings.
# Without systemd it prints the command that runs the server.
#
#   --foreground  do not touch systemd; run the server in the foreground as the
#                 litedesk user (for containers and first tries; Ctrl-C stops it)
#
# Environment: PYTHON (default python3).  DESTDIR stages everything under that
# directory instead (for testing this script): no apt, no user, no chown, no
# systemctl, and the server is not started.
set -euo pipefail

foreground=0
for arg in "$@"; do
    case $arg in
    --foreground) foreground=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
        exit 0
        ;;
    *)
        echo "install-server.sh: unknown argument: $arg (try --help)" >&2
        exit 2
        ;;
    esac
done

src=$(cd "$(dirname "$0")/.." && pwd)
destdir=${DESTDIR:-}
python=${PYTHON:-python3}
user=litedesk
venv=/opt/litedesk
data=/var/lib/litedesk
conf=/etc/litedesk/relay.conf
unit=/etc/systemd/system/litedesk-relay.service
run_cmd=("$venv/bin/twistd" --nodaemon --pidfile= --logfile=- litedesk-relay --config "$conf")

say() { printf '==> %s\n' "$*"; }

if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install-server.sh: run this as root (sudo bash $0)" >&2
    exit 1
fi
[ -f "$src/setup.cfg" ] && [ -f "$src/conf/litedesk-relay.service" ] || {
    echo "install-server.sh: $src is not a LiteDesk checkout" >&2
    exit 1
}

# 1. Build prerequisites from apt.
if [ -z "$destdir" ] && command -v dpkg-query >/dev/null 2>&1; then
    missing=()
    for pkg in python3-venv gcc libc6-dev python3-dev; do
        dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -qx 'install ok installed' ||
            missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        say "apt-get install ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            python3 "${missing[@]}"
    fi
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "install-server.sh: $python is older than 3.11 (set PYTHON=...)" >&2
    exit 1
}

# 2. The service user.
if [ -z "$destdir" ] && ! getent passwd "$user" >/dev/null; then
    say "creating system user $user"
    useradd --system --user-group --home-dir "$data" --no-create-home \
        --shell /usr/sbin/nologin --comment "LiteDesk relay server" "$user"
fi

# 3. The venv, with this checkout installed (not editable: the service must not
# depend on the checkout staying where it is).
if [ ! -x "$destdir$venv/bin/python" ]; then
    say "$python -m venv $destdir$venv"
    "$python" -m venv "$destdir$venv"
fi
say "pip install $src into $destdir$venv"
"$destdir$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$destdir$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade "$src"
# Write twisted/plugins/dropin.cache now: the service cannot (ProtectSystem=strict).
"$destdir$venv/bin/python" -c \
    'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))'
"$destdir$venv/bin/twistd" litedesk-relay --help >/dev/null

# 4. Data directory, configuration, unit.
if [ -z "$destdir" ]; then
    install -d -m 0700 -o "$user" -g "$user" "$data"
else
    install -d -m 0700 "$destdir$data"
fi
install -d -m 0755 "$destdir$(dirname "$conf")"
if [ ! -e "$destdir$conf" ]; then
    say "writing $destdir$conf (from conf/litedesk-relay.conf.example)"
    install -m 0644 "$src/conf/litedesk-relay.conf.example" "$destdir$conf"
else
    say "keeping $destdir$conf"
fi
install -d -m 0755 "$destdir$(dirname "$unit")"
install -m 0644 "$src/conf/litedesk-relay.service" "$destdir$unit"

if [ -n "$destdir" ]; then
    say "staged under $destdir; not starting anything"
    exit 0
fi

# 5. Start it.
if [ "$foreground" -eq 1 ]; then
    say "running in the foreground: runuser -u $user -- ${run_cmd[*]}"
    cd "$data"
    exec runuser -u "$user" -- "${run_cmd[@]}"
fi
if [ -d /run/systemd/system ]; then
    say "systemctl enable litedesk-relay; systemctl restart litedesk-relay"
    systemctl daemon-reload
    systemctl enable --quiet litedesk-relay
    systemctl restart litedesk-relay
    for _ in $(seq 20); do
        [ -s "$data/id_ed25519.pub" ] && break
        sleep 0.5
    done
    systemctl --no-pager --lines=5 status litedesk-relay || true
    if [ -s "$data/id_ed25519.pub" ] && ! grep -qE '^[[:space:]]*key[[:space:]]*=' "$conf"; then
        echo
        echo "RustDesk client settings (Settings > Network > ID/Relay server):"
        echo "  ID server:    this host's public name or address"
        echo "  Relay server: the same (port 21117 is derived)"
        echo "  Key:          $(cat "$data/id_ed25519.pub")"
    else
        echo "The client settings are in the log: journalctl -u litedesk-relay | grep 'Client settings'"
    fi
    echo "Open TCP 21115-21117 and UDP 21116 in the firewall."
else
    echo "systemd is not running.  Start the server with:"
    echo "  cd $data && runuser -u $user -- ${run_cmd[*]}"
    echo "or run this script again with --foreground."
fi
