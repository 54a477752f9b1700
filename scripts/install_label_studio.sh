#!/usr/bin/env bash
# Install the Label Studio server that tests/test_label_studio.py starts, into its own virtual
# environment VENVDIR: Label Studio is an application with its own pins (Django, numpy, ...), run
# beside unilseg, not inside its environment. Skipped when VENVDIR/bin/label-studio exists.
#     bash scripts/install_label_studio.sh VENVDIR
# The test finds it at $VIRTUAL_ENV/label-studio/bin/label-studio (scripts/install.sh puts it there),
# or wherever $UNILSEG_LABEL_STUDIO names the executable.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: bash scripts/install_label_studio.sh VENVDIR" >&2; exit 2; }
venv="$1"
version="1.23.2"
if [ -x "$venv/bin/label-studio" ]; then
  exit 0
fi
[ -x "$venv/bin/python" ] || python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "label-studio==$version"
"$venv/bin/python" -c "import label_studio"  # (`label-studio --version` goes on to start a server)
echo "installed: label-studio $version in $venv"
