#!/bin/sh
# The staging driver, run as the app user in a sandboxed stack container with the app in /app:
# the Heroku / Cloud Foundry buildpack contract. Buildpacks are tried in order and the first whose
# bin/detect succeeds wins (only the ones named by the user, if any); then
# bin/compile APP CACHE and bin/release APP. The Procfile's process types win over the
# buildpack's default_process_types. Results go to /app/.paas/{buildpack,processes}.
set -u
APP=/app
# The dependency cache the node restored (issue 19); a stack image without it gets a scratch one.
CACHE=/cache
[ -d "$CACHE" ] && [ -w "$CACHE" ] || CACHE=/tmp/cache
mkdir -p "$CACHE" "$APP/.paas"
echo "${PAAS_STACK:-}" > "$APP/.paas/stack"
# The operator's extra CAs (PAAS_STAGING_CA_FILE) on top of Debian's, for every installer.
if [ -f /etc/paas/staging-ca.pem ]; then
  cat /etc/ssl/certs/ca-certificates.crt /etc/paas/staging-ca.pem > /tmp/ca-bundle.pem
  export SSL_CERT_FILE=/tmp/ca-bundle.pem PIP_CERT=/tmp/ca-bundle.pem REQUESTS_CA_BUNDLE=/tmp/ca-bundle.pem
  export NODE_EXTRA_CA_CERTS=/etc/paas/staging-ca.pem npm_config_cafile=/tmp/ca-bundle.pem
fi
# Installers keep their caches out of the droplet (HOME is /app).
export PIP_CACHE_DIR=/tmp/pip-cache npm_config_cache=/tmp/npm-cache npm_config_update_notifier=false
export npm_config_fund=false npm_config_audit=false XDG_CACHE_HOME=/tmp/xdg-cache
# Buildpacks named by the user still run bin/detect (as Heroku does): a named buildpack that
# cannot run the app fails here with a clear line instead of deploying something broken.
list="${PAAS_BUILDPACKS:-staticfile python node ruby go binary}"
chosen=""
for bp in $list; do
  dir="/buildpacks/$bp"
  if [ ! -x "$dir/bin/detect" ]; then
    echo "Unknown buildpack $bp"
    exit 223
  fi
  if "$dir/bin/detect" "$APP" >/dev/null 2>&1; then
    chosen="$bp"
    break
  fi
done
if [ -z "$chosen" ]; then
  echo "No buildpack detected this app (tried: $list)"
  exit 222
fi
echo "-----> $chosen buildpack"
# On failure the buildpack's own last line is the reason the node reports (exit 224 / 225).
if ! "$dir/bin/compile" "$APP" "$CACHE" 2>&1; then
  exit 224
fi
if ! "$dir/bin/release" "$APP" > /tmp/release.yml; then
  exit 225
fi
echo "$chosen" > "$APP/.paas/buildpack"
{
  if [ -f "$APP/Procfile" ]; then
    grep -E '^[A-Za-z0-9_-]+:' "$APP/Procfile" | sed 's/^\([A-Za-z0-9_-]*\): */\1: /'
  fi
  sed -n '/^default_process_types:/,$p' /tmp/release.yml | sed -n 's/^  *\([A-Za-z0-9_-]*\): *\(.*\)$/\1: \2/p'
} | awk -F: '!seen[$1]++' > "$APP/.paas/processes"
echo "-----> Process types: $(cut -d: -f1 "$APP/.paas/processes" | tr '\n' ' ')"
