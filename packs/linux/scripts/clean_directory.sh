#!/bin/sh
# clean_directory.sh DIR DAYS: delete regular files older than DAYS below DIR.
set -eu
dir=$1
days=$2
case "$dir" in
  /|/bin|/boot|/dev|/etc|/home|/lib|/lib64|/proc|/root|/sbin|/sys|/usr|/var)
    echo "refusing to clean $dir: it is a system directory" >&2
    exit 2 ;;
  /*) ;;
  *) echo "refusing to clean $dir: give an absolute path" >&2; exit 2 ;;
esac
if [ ! -d "$dir" ]; then
  echo "$dir is not a directory" >&2
  exit 2
fi
count=$(find "$dir" -mindepth 1 -xdev -type f -mtime +"$days" -print -delete | wc -l)
echo "deleted $count file(s) older than $days day(s) below $dir"
