#!/bin/sh
# disk_usage.sh PATH TOP: file-system usage of PATH and its TOP largest entries.
set -eu
path=${1:-/}
top=${2:-10}
df -h "$path"
echo
du -x -h -d 1 "$path" 2>/dev/null | sort -rh | head -n "$((top + 1))"
