#!/usr/bin/env bash
# Installs what Mega-Taxonomy's build and tests need on Debian 12: the Debian packages listed in
# scripts/apt-packages.txt and the Python packages pinned in requirements.txt.
#
# Idempotent and quick when nothing is missing: apt-get runs only for packages that dpkg does not
# report as installed, and pip only when an installed version differs from its pin.
# Run as root (or with sudo available). Environment:
#   PYTHON=python3           the interpreter whose packages are installed
#   MEGATAX_SKIP_SETUP=1     do nothing (for machines managed otherwise)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ "${MEGATAX_SKIP_SETUP:-0}" == "1" ]]; then
  echo "setup: skipped (MEGATAX_SKIP_SETUP=1)"
  exit 0
fi

as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "setup: need root (or sudo) to run: $*" >&2
    return 1
  fi
}

# ---- Debian packages ------------------------------------------------------------------------
mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]\+//g' scripts/apt-packages.txt | grep -v '^$')
missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} > 0)); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -q
  as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#packages[@]} Debian packages present"
fi

# ---- Python packages ------------------------------------------------------------------------
PYTHON="${PYTHON:-python3}"

# Exit 0 when every 'name==version' pin of requirements.txt is installed at that version.
pins_satisfied() {
  "$PYTHON" - requirements.txt <<'EOF'
import sys
from importlib import metadata

ok = True
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, sep, version = line.partition("==")
    if not sep:
        ok = False  # not an exact pin: let pip decide
        continue
    try:
        installed = metadata.version(name.strip())
    except metadata.PackageNotFoundError:
        installed = None
    if installed != version.strip():
        print(f"setup: {name.strip()} {installed or 'missing'}, want {version.strip()}")
        ok = False
sys.exit(0 if ok else 1)
EOF
}

if pins_satisfied; then
  echo "setup: Python packages of requirements.txt present"
else
  pip_args=(install --disable-pip-version-check --no-input --root-user-action=ignore
            -r requirements.txt)
  # Debian's own python3 is "externally managed" (PEP 668): pip refuses to install into it unless
  # told to. The pins are exact and the packages are wheels, so installing beside apt's is fine.
  if "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'
  then
    pip_args+=(--break-system-packages)
  fi
  echo "setup: $PYTHON -m pip ${pip_args[*]}"
  "$PYTHON" -m pip "${pip_args[@]}"
  pins_satisfied
fi

echo "setup: done"
