#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo start for real: Redis and PostgreSQL (cache backends),
# and for the lab: Knot DNS, Unbound, ldns tools, Postfix, iproute2. Only what is missing is installed.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ]; }
have redis-server || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
have knotd || need+=(knot)
have knotc || need+=(knot)
have keymgr || need+=(knot)
have kdig || need+=(knot-dnsutils)
have unbound || need+=(unbound)
have ldns-key2ds || need+=(ldnsutils)
have /usr/sbin/postfix || need+=(postfix)
have ip || need+=(iproute2)
have openssl || need+=(openssl)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-system-deps: missing ${need[*]}; run as root (or: sudo apt-get install ${need[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
echo "installing: ${need[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
