#!/usr/bin/env bash
# Install unilseg for development and testing into a virtual environment (default .venv):
# the pinned requirements, the package with every optional extra, and the system Chromium
# the web demo's browser test drives and QEMU's user-mode emulator for the int8 test on AVX2
# kernels (Debian/Ubuntu, as root; Playwright's own browser download is never used). Safe to run again.
#     bash scripts/install.sh [VENV]      then: . VENV/bin/activate && python -m pytest -q
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
[ -x "$venv/bin/python" ] || python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
# the Label Studio server tests/test_label_studio.py starts: an application with its own pins (Django, numpy
# < 2.3, ...), so in a venv of its own inside this one, where the test finds it; installed alongside the rest
bash scripts/install_label_studio.sh "$venv/label-studio" &
ls_install=$!
"$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt -e '.[all]'
# label-studio-sdk (extra 'label-studio': --label-studio's brush RLE encoder) pins opencv-python-headless < 4.13
# for image tools unilseg does not use; it goes in beside unilseg's pins: itself without dependencies, then the
# rest of its requirements under requirements.txt's constraints.
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps label-studio-sdk==2.1.2
"$venv/bin/python" -c "
import re; from importlib.metadata import requires
for r in requires('label-studio-sdk'):
    name = re.split(r'[ <>=!~;(\[]', r, maxsplit=1)[0].lower()
    if 'extra ==' not in r and name not in ('opencv-python-headless', 'numpy'):
        print(r.replace(' (', '').replace(')', ''))" > "$venv/label-studio-sdk.txt"
sdk_log="$(mktemp)"  # pip then warns of the OpenCV pin it was told to pass over: that warning is left out
"$venv/bin/pip" install --quiet --disable-pip-version-check -c requirements.txt -r "$venv/label-studio-sdk.txt" \
  >"$sdk_log" 2>&1 || { cat "$sdk_log" >&2; exit 1; }
grep -v "opencv-python-headless<4.13\|resolver does not currently take into account\|^WARNING: Location" "$sdk_log" >&2 \
  || true
rm -f "$sdk_log"
need=()  # system packages the tests drive: the browser, and QEMU's user-mode emulator for the AVX2 int8 test
command -v chromium >/dev/null || [ -n "${UNILSEG_CHROMIUM:-}" ] || need+=(chromium)
command -v qemu-x86_64 >/dev/null || [ "$(uname -m)" != x86_64 ] || need+=(qemu-user)
if [ "${#need[@]}" -gt 0 ]; then
  log="$(mktemp)"
  if [ "$(id -u)" -eq 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >"$log" 2>&1 \
      || { echo "install: could not install ${need[*]} with apt-get; see $log" >&2; exit 1; }
    rm -f "$log"
  else
    echo "install: run 'sudo apt-get install -y ${need[*]}' for the tests that drive them (the web demo's" \
         "browser test; the int8 test on AVX2 kernels)" >&2
  fi
fi
wait "$ls_install" || { echo "install: the Label Studio server did not install; see above" >&2; exit 1; }
"$venv/bin/python" -c "import unilseg, torch, cv2, gradio, fastapi, ray.serve; print('installed: unilseg', \
unilseg.__version__, '| torch', torch.__version__, '| opencv', cv2.__version__, '| gradio', gradio.__version__, \
'| fastapi', fastapi.__version__, '| ray', ray.__version__)"
