#!/bin/sh
# `deno task device-check`, and the GPU machine's entry point, where no Deno is installed:
#
#   sh tests/device/check.sh --out DIR [--cpu-only] [--archive FILE] [--work DIR] [--budget S] ...
#
# Takes the Deno binary out of the kit's archive (default .device/loupe-device-kit.tar, written by
# `deno task device-pack`), checks it against the manifest's SHA-256, and runs tests/device/check.ts
# with it; every other argument goes to check.ts. Nothing is fetched: no network is needed.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
archive="$root/.device/loupe-device-kit.tar"
work="$root/.device/work"
prev=""
for a in "$@"; do
  case "$prev" in
    --archive) archive=$a ;;
    --work) work=$a ;;
  esac
  case "$a" in
    --archive=*) archive=${a#--archive=} ;;
    --work=*) work=${a#--work=} ;;
  esac
  prev=$a
done
if [ ! -f "$archive" ]; then
  echo "device-check: no archive at $archive (run \`deno task device-pack\` first, and carry it)" >&2
  exit 2
fi
mkdir -p "$work/bin"
deno="$work/bin/deno"
# The manifest's line of deno.xz: its sha256 and the sha256 of the binary inside.
manifest=$(tar xOf "$archive" manifest.json)
want=$(printf '%s\n' "$manifest" | tr -d ' \n' | sed 's/.*"file":"deno.xz"[^}]*"rawSha256":"\([0-9a-f]*\)".*/\1/')
if [ ! -x "$deno" ] || [ "$(sha256sum "$deno" | cut -d' ' -f1)" != "$want" ]; then
  echo "device-check: unpacking Deno from $archive" >&2
  rm -f "$deno" "$deno.xz"
  tar xf "$archive" -C "$work/bin" deno.xz
  packed=$(printf '%s\n' "$manifest" | tr -d ' \n' | sed 's/.*"file":"deno.xz","what":"[^"]*","sha256":"\([0-9a-f]*\)".*/\1/')
  got=$(sha256sum "$work/bin/deno.xz" | cut -d' ' -f1)
  if [ "$got" != "$packed" ]; then
    echo "device-check: deno.xz in $archive has sha256 $got, the manifest says $packed" >&2
    exit 3
  fi
  if command -v xz >/dev/null 2>&1; then
    xz -dc "$work/bin/deno.xz" >"$deno.tmp"
  else
    python3 -c 'import lzma,shutil,sys
with lzma.open(sys.argv[1]) as i, open(sys.argv[2], "wb") as o: shutil.copyfileobj(i, o, 1 << 20)' \
      "$work/bin/deno.xz" "$deno.tmp"
  fi
  rm -f "$work/bin/deno.xz"
  chmod +x "$deno.tmp"
  got=$(sha256sum "$deno.tmp" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    echo "device-check: the unpacked Deno has sha256 $got, the manifest says $want" >&2
    exit 3
  fi
  mv "$deno.tmp" "$deno"
fi
# Deno's own cache in the work folder: nothing of this machine's is used, nothing is fetched.
export DENO_DIR="$work/deno-dir"
export DENO_NO_UPDATE_CHECK=1
exec "$deno" run -A "$root/tests/device/check.ts" --archive "$archive" --work "$work" "$@"
