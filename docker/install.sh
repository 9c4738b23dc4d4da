#!/bin/sh
# The image's build steps, kept in one script so tests can run them outside Docker:
#   docker/install.sh SOURCE_DIR PREFIX
# installs the package from SOURCE_DIR into the Python environment at PREFIX
# (the image uses /opt/venv) and checks that the console script works.
set -eu
src=${1:-.}
prefix=${2:-/opt/venv}
python3 -m venv ${VENV_FLAGS:-} "$prefix"
"$prefix/bin/pip" install --no-cache-dir --disable-pip-version-check --quiet "$src"
"$prefix/bin/myagent-ws" --version
