#!/bin/sh
# The staging driver, run as the app user in a sandboxed stack container with the app in /app:
# the Heroku / Cloud Foundry buildpack contract. Buildpacks are tried in order and the first whose
# bin/detect succeeds wins (only the ones named by the user, if any); then
# bin/compile APP CACHE and bin/release APP. The Procfile's process types win over the
# buildpack's default_process_types. Results go to /app/.paas/{buildpack,processes}.
set -u
APP=/app
CACHE=/tmp/cache
mkdir -p "$CACHE" "$APP/.paas"
# Buildpacks named by the user still run bin/detect (as Heroku does): a named buildpack that
# cannot run the app fails here with a clear line instead of deploying something broken.
list="${PAAS_BUILDPACKS:-staticfile python node binary}"
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
if ! "$dir/bin/compile" "$APP" "$CACHE"; then
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
