#!/bin/sh
# Stands in for a compiled binary: any executable the Procfile names runs as it is.
cd "$(dirname "$0")/www" && exec python3 -m http.server "$PORT"
