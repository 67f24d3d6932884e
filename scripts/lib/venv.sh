# Sourced by scripts/test.sh and scripts/dev-pull-loop.sh: make sure $venv (default .venv)
# exists and holds the package with its test and dev extras, reinstalled when pyproject.toml is
# newer than the install stamp. Expects to run from the repository root; sets $venv.
# One line per step; pip runs quietly, and its errors (stderr) still show.
venv=${VWORKSPACE_VENV:-.venv}
_vws_python=${PYTHON:-python3}
_vws_who=$(basename "$0")
if [ ! -x "$venv/bin/python" ]; then
  echo "$_vws_who: creating virtualenv $venv ($("$_vws_python" --version 2>&1))"
  "$_vws_python" -m venv "$venv"
fi
_vws_stamp="$venv/.vworkspace-installed"
if [ ! -f "$_vws_stamp" ] || [ pyproject.toml -nt "$_vws_stamp" ]; then
  _vws_start=$(date +%s)
  echo "$_vws_who: installing vworkspace with its test and dev extras into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test,dev]'
  touch "$_vws_stamp"
  echo "$_vws_who: installed in $(( $(date +%s) - _vws_start ))s"
fi
