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
# The venv is built with the distribution's interpreter, /usr/bin/python3: the
# first python3 on PATH may be a per-user build (pyenv in a 0700 home) that the
# service user cannot execute.  Before anything is enabled or started the script
# checks that the service user can run the venv's twistd, and stops with the
# reason otherwise.
#
# Environment:
#   PYTHON         interpreter for the venv (default /usr/bin/python3); the
#                  service user must be able to execute it
#   DESTDIR        stage everything under that directory instead (for testing
#                  this script): no apt, no user, no chown, no systemctl, and
#                  the server is not started
#   LITEDESK_USER, LITEDESK_VENV, LITEDESK_DATA, LITEDESK_CONF, LITEDESK_UNIT
#                  the service user (litedesk), venv (/opt/litedesk), data
#                  directory (/var/lib/litedesk), configuration file
#                  (/etc/litedesk/relay.conf) and unit file
#                  (/etc/systemd/system/litedesk-relay.service); the unit and a
#                  new configuration are written with these paths
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
python=${PYTHON:-/usr/bin/python3}
user=${LITEDESK_USER:-litedesk}
venv=${LITEDESK_VENV:-/opt/litedesk}
data=${LITEDESK_DATA:-/var/lib/litedesk}
conf=${LITEDESK_CONF:-/etc/litedesk/relay.conf}
unit=${LITEDESK_UNIT:-/etc/systemd/system/litedesk-relay.service}
run_cmd=("$venv/bin/twistd" --nodaemon --pidfile= --logfile=- litedesk-relay --config "$conf")

say() { printf '==> %s\n' "$*"; }
# die FIRST-LINE [MORE-LINES...]: the reason on stderr, then exit 1.
die() {
    printf 'install-server.sh: %s\n' "$1" >&2
    shift
    (($# == 0)) || printf '%s\n' "$@" >&2
    exit 1
}

# Can the service user execute this program of the venv?  Prints what went wrong
# (runuser's or the program's own message) when it cannot.  Without a service
# user (DESTDIR) it only checks that the program runs at all.
runs_as_user() {
    local out
    if [ -n "$destdir" ]; then
        out=$("$@" 2>&1 >/dev/null) && return 0
    else
        # runuser, not su: no login shell (the user's is nologin), no password.
        out=$(runuser -u "$user" -- "$@" 2>&1 >/dev/null) && return 0
    fi
    printf '%s\n' "$out" | tail -n 3
    return 1
}

# Why the venv cannot serve: almost always an interpreter the service user
# cannot reach (python3 on root's PATH from pyenv or a venv under /root).
unreachable() {
    local what=$1 why=$2 base
    base=$(sed -n 's/^home *= *//p' "$destdir$venv/pyvenv.cfg" 2>/dev/null)
    die "the service user $user cannot run $what:" \
        "  $why" \
        "The venv $venv was built with $python (base interpreter in ${base:-?})," \
        "which $user may not read or execute (e.g. a pyenv build in root's 0700 home)." \
        "Use the distribution's interpreter: apt-get install python3-venv, then run" \
        "  PYTHON=/usr/bin/python3 bash $0" \
        "(with that interpreter already: every directory above $venv must be" \
        "searchable by $user).  Nothing was enabled or started."
}

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
command -v "$python" >/dev/null 2>&1 ||
    die "no Python interpreter $python (install python3, or set PYTHON=...)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$python is older than 3.11 (set PYTHON=...)"

# 2. The service user.
if [ -z "$destdir" ] && ! getent passwd "$user" >/dev/null; then
    say "creating system user $user"
    useradd --system --user-group --home-dir "$data" --no-create-home \
        --shell /usr/sbin/nologin --comment "LiteDesk relay server" "$user"
fi

# 3. The venv, with this checkout installed (not editable: the service must not
# depend on the checkout staying where it is).
if [ -x "$destdir$venv/bin/python" ] && ! runs_as_user "$destdir$venv/bin/python" -c '' >/dev/null; then
    # A venv an earlier run built on an interpreter the service user cannot run:
    # build it again on $python rather than fail on it below.
    say "$destdir$venv is not usable by $user; rebuilding it with $python"
    "$python" -m venv --clear "$destdir$venv"
elif [ ! -x "$destdir$venv/bin/python" ]; then
    say "$python -m venv $destdir$venv"
    "$python" -m venv "$destdir$venv"
fi
# Checked before the slow pip install, so a wrong PYTHON fails at once.
why=$(runs_as_user "$destdir$venv/bin/python" -c '') || unreachable "$venv/bin/python" "$why"
say "pip install $src into $destdir$venv"
"$destdir$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$destdir$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade "$src"
# Write twisted/plugins/dropin.cache now: the service cannot (ProtectSystem=strict).
"$destdir$venv/bin/python" -c \
    'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))'
# The command the unit runs, as the user it runs as: checked before the unit is
# installed, enabled or started.
why=$(runs_as_user "$destdir$venv/bin/twistd" litedesk-relay --help) ||
    unreachable "$venv/bin/twistd" "$why"

# 4. Data directory, configuration, unit.
if [ -z "$destdir" ]; then
    install -d -m 0700 -o "$user" -g "$user" "$data"
else
    install -d -m 0700 "$destdir$data"
fi
install -d -m 0755 "$destdir$(dirname "$conf")"
if [ ! -e "$destdir$conf" ]; then
    say "writing $destdir$conf (from conf/litedesk-relay.conf.example)"
    sed -e "s|^data-dir = /var/lib/litedesk\$|data-dir = $data|" \
        "$src/conf/litedesk-relay.conf.example" >"$destdir$conf.new"
    chmod 0644 "$destdir$conf.new"
    mv "$destdir$conf.new" "$destdir$conf"
else
    say "keeping $destdir$conf"
fi
install -d -m 0755 "$destdir$(dirname "$unit")"
# The unit names the default paths; write it with the ones in use.
sed -e "s|/opt/litedesk/|$venv/|g" -e "s|/var/lib/litedesk|$data|g" \
    -e "s|/etc/litedesk/relay.conf|$conf|g" \
    -e "s|^User=litedesk\$|User=$user|" -e "s|^Group=litedesk\$|Group=$user|" \
    "$src/conf/litedesk-relay.service" >"$destdir$unit.new"
chmod 0644 "$destdir$unit.new"
mv "$destdir$unit.new" "$destdir$unit"

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
    service=$(basename "$unit" .service)
    say "systemctl enable $service; systemctl restart $service"
    systemctl daemon-reload
    systemctl enable --quiet "$service"
    systemctl restart "$service"
    for _ in $(seq 20); do
        [ -s "$data/id_ed25519.pub" ] && break
        sleep 0.5
    done
    systemctl --no-pager --lines=5 status "$service" || true
    if [ -s "$data/id_ed25519.pub" ] && ! grep -qE '^[[:space:]]*key[[:space:]]*=' "$conf"; then
        echo
        echo "RustDesk client settings (Settings > Network > ID/Relay server):"
        echo "  ID server:    this host's public name or address"
        echo "  Relay server: the same (port 21117 is derived)"
        echo "  Key:          $(cat "$data/id_ed25519.pub")"
    else
        echo "The client settings are in the log: journalctl -u $service | grep 'Client settings'"
    fi
    echo "Open TCP 21115-21117 and UDP 21116 in the firewall."
else
    echo "systemd is not running.  Start the server with:"
    echo "  cd $data && runuser -u $user -- ${run_cmd[*]}"
    echo "or run this script again with --foreground."
fi
