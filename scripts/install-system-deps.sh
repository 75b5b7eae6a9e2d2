#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo start for real: Redis and PostgreSQL (cache backends),
# Dovecot (IMAP, for reports fetch-imap), promtool (Prometheus rule tests), and for the lab: Knot DNS, Unbound,
# ldns tools, Postfix, iproute2, nftables, Chromium (dashboard tests), and Debian's Exim (unpacked privately, see
# the end of this file). Only what is missing is installed.
set -euo pipefail
EXIM_ROOT="${MXSEC_EXIM_ROOT:-/opt/mxsec/exim4}"
need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ]; }
have redis-server || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
have pebble || need+=(pebble)
have knotd || need+=(knot)
have knotc || need+=(knot)
have keymgr || need+=(knot)
have kdig || need+=(knot-dnsutils)
have unbound || need+=(unbound)
have ldns-key2ds || need+=(ldnsutils)
have /usr/sbin/postfix || need+=(postfix)
have ip || need+=(iproute2)
# nftables: the lab's on-path attacker (src/mxsec/lab/attacker.py) redirects and drops with nft rules
have nft || have /usr/sbin/nft || need+=(nftables)
have openssl || need+=(openssl)
# nginx only as a binary for `nginx -t` of the generated policy-host snippet (tests/unit/test_cli_generate.py);
# its service is kept from starting (see below)
have /usr/sbin/nginx || need+=(nginx-light)
# Dovecot for `reports fetch-imap` (tests/integration/dovecot.py starts private instances with their own
# config; the package's service is kept from starting like nginx's)
have /usr/sbin/dovecot || need+=(dovecot-core)
have /usr/lib/dovecot/imap || need+=(dovecot-imapd)
# promtool checks and unit-tests the alerting rules in contrib/prometheus (tests/integration/test_observability.py);
# it comes with the prometheus package, whose server is kept from starting like nginx's
have /usr/bin/promtool || need+=(prometheus)
# Debian's Chromium for the dashboard's browser tests (tests/lab/test_reports_dashboard.py, driven by Playwright
# with executable_path; Playwright's own browser downloads are never used)
have /usr/bin/chromium || need+=(chromium)
# The Debian package (make deb, tests/lab/test_deb.py): built with dpkg-deb under fakeroot, shared objects
# stripped (binutils), checked with lintian, its units with systemd-analyze; man pages rendered with groff
have fakeroot || need+=(fakeroot)
have strip || need+=(binutils)
have lintian || need+=(lintian)
have systemd-analyze || need+=(systemd)
have groff || need+=(groff-base)
have /usr/bin/python3 || need+=(python3)
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
[ ${#need[@]} -eq 0 ] && [ -x "$EXIM_ROOT/usr/sbin/exim4" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-system-deps: missing ${need[*]}; run as root (or: sudo apt-get install ${need[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
[ ${#need[@]} -eq 0 ] || echo "installing: ${need[*]}"
apt-get update -qq
if [ ${#need[@]} -gt 0 ]; then
  # Package services are not started by the installation: the tests start their own servers. A temporary
  # policy-rc.d (only if none exists) keeps e.g. nginx from binding port 80 on this machine.
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
  fi
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

# Exim for the lab's Exim test (tests/lab/test_lab_exim.py, src/mxsec/lab/exim.py). exim4-daemon-light and
# postfix both provide mail-transport-agent and conflict, so Exim is not installed as a package: Debian's own
# .debs are unpacked with dpkg -x into $EXIM_ROOT (no maintainer scripts, no service, not registered with
# dpkg, the system MTA stays Postfix), and only the shared libraries the binary links against are installed.
if [ ! -x "$EXIM_ROOT/usr/sbin/exim4" ]; then
  debs="$(mktemp -d)"
  trap 'rm -rf "$debs"' EXIT
  chmod 755 "$debs"; chown _apt "$debs" 2>/dev/null || true
  echo "unpacking Debian's Exim into $EXIM_ROOT"
  (cd "$debs" && apt-get download -qq exim4-daemon-light exim4-base exim4-config >/dev/null)
  libs=()
  for deb in "$debs"/exim4-daemon-light_*.deb "$debs"/exim4-base_*.deb; do
    for dep in $(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/ //g'); do
      case "$dep" in
        lib*) dpkg-query -W -f='${Status}' "$dep" 2>/dev/null | grep -q ' installed$' || libs+=("$dep") ;;
      esac
    done
  done
  [ ${#libs[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${libs[@]}" | sort -u) >/dev/null
  rm -rf "$EXIM_ROOT.new" && mkdir -p "$EXIM_ROOT.new"
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$EXIM_ROOT.new"; done
  if ldd "$EXIM_ROOT.new/usr/sbin/exim4" | grep -q 'not found'; then
    echo "install-system-deps: $EXIM_ROOT.new/usr/sbin/exim4 still misses libraries:" >&2
    ldd "$EXIM_ROOT.new/usr/sbin/exim4" | grep 'not found' >&2
    exit 1
  fi
  rm -rf "$EXIM_ROOT" && mv "$EXIM_ROOT.new" "$EXIM_ROOT"
  echo "Exim $(dpkg-deb -f "$debs"/exim4-daemon-light_*.deb Version) in $EXIM_ROOT"
fi
