# Shared set-up for the README's commands, .ci/run and scripts/*: install what is missing.
# Sourced, not run. Needs root for apt-get; never touches the host's network configuration.

ROUTECAT_APT_PACKAGES=(etcd-server etcd-client bird2 iproute2 iptables nftables ipset iputils-ping iperf3 containernetworking-plugins traceroute)

# Installs the Debian packages that are missing (all of them when FORCE_APT=1, as CI does).
ensure_packages() {
  local missing=()
  local p
  for p in "${ROUTECAT_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ "${#missing[@]}" -eq 0 ] && [ "${FORCE_APT:-0}" != 1 ]; then return 0; fi
  if [ "$(id -u)" != 0 ]; then
    echo "setup: need root to apt-get install ${missing[*]}" >&2
    return 1
  fi
  echo "setup: apt-get install ${missing[*]:-${ROUTECAT_APT_PACKAGES[*]}}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${ROUTECAT_APT_PACKAGES[@]}" >/dev/null
}

# `npm ci` unless node_modules already matches package-lock.json. The registry here lacks other
# platforms' optional packages (@deno/darwin-*, ...), so `npm ci` may refuse the lock as out of sync;
# then `npm install` with the same lock installs the same versions and must leave the lock unchanged.
ensure_node_modules() {
  local stamp=node_modules/.routecat-lock-hash want err
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  err=$(mktemp)
  echo "setup: npm ci" >&2
  if ! npm ci --no-audit --no-fund --loglevel=error 2>"$err"; then
    if ! grep -q 'EUSAGE' "$err"; then cat "$err" >&2; rm -f "$err"; return 1; fi
    echo "setup: npm ci refused the lock ($(grep -m1 'Missing:' "$err" | sed 's/^npm error //')...): npm install with the same lock" >&2
    cp package-lock.json "$err.lock"
    npm install --no-audit --no-fund --loglevel=error
    if ! cmp -s package-lock.json "$err.lock"; then
      cp "$err.lock" package-lock.json
      echo "setup: npm install wanted to change package-lock.json: the lock is out of date with package.json" >&2
      rm -f "$err" "$err.lock"
      return 1
    fi
    rm -f "$err.lock"
  fi
  rm -f "$err"
  echo "$want" >"$stamp"
}
