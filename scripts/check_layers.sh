#!/usr/bin/env bash
# The floors of src/s0 (DESIGN.md): each folder may include only the folders listed for it.
# Run by CTest (test "layers"); fails naming every include that reaches a higher floor.
set -euo pipefail
cd "$(dirname "$0")/../src/s0"
declare -A allowed=(
  [util]="util"
  [io]="util io"
  [nn]="util nn"
  [dist]="util io dist"
  [text]="util io text"
  [eval]="util io text eval"
  [models]="util io text nn models"
  [adapters]="util io nn models adapters"
  [interop]="util io models interop"
  [train]="util io text nn models adapters dist train"
  [generate]="util io text nn models adapters generate"
  [serve]="util io text nn models adapters generate serve"
  [pipeline]="util io text nn models adapters dist train generate eval pipeline"
)
bad=0
for dir in */; do
  floor=${dir%/}
  if [ -z "${allowed[$floor]+x}" ]; then
    echo "check_layers: src/s0/$floor has no floor in scripts/check_layers.sh" >&2
    bad=1
    continue
  fi
  while IFS= read -r line; do
    file=${line%%:*}
    target=$(sed -E 's|.*#include "s0/([a-z_]+)/.*|\1|' <<<"$line")
    if [[ " ${allowed[$floor]} " != *" $target "* ]]; then
      echo "check_layers: $file includes s0/$target/ (a higher floor than $floor)" >&2
      bad=1
    fi
  done < <(grep -rHn '#include "s0/' "$floor" || true)
done
[ $bad -eq 0 ] && echo "check_layers: every floor includes only the floors below it"
exit $bad
