#!/usr/bin/env bash
# Build the benchmark's own virtual environment at benchmarks/.venv (gitignored).
#
# It holds marketarena (editable, with [dev]), pyinstrument and the peer trading envs that
# benchmarks/peers.py drives. Peer code is never committed: it lives in benchmarks/.venv and
# benchmarks/.cache, both gitignored.
#
#   bash benchmarks/setup_venv.sh          # from anywhere; PYTHON=python3.11 to pick the interpreter
#   benchmarks/.venv/bin/python benchmarks/peers.py
#
# Idempotent: every step checks what is already there and skips itself, so a rerun takes a
# couple of seconds. Delete benchmarks/.venv (or benchmarks/.cache) to start over.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
VENV="$HERE/.venv"
CACHE="$HERE/.cache"
PY="$VENV/bin/python"

# pinned versions (the ones the benchmark was written and checked against)
TORCH_VERSION="2.13.0"        # local CPU build; an unpinned torch would pull a ~3 GB CUDA build
GYM_ANYTRADING_VERSION="2.0.0"
GYM_TRADING_ENV_VERSION="0.3.5"
FINRL_VERSION="0.3.7"
PYINSTRUMENT_VERSION="5.1.3"

say() { printf '[setup_venv] %s\n' "$*"; }

# installed version of a distribution in the venv, or empty
installed() {
    "$PY" - "$1" <<'EOF'
import sys
from importlib import metadata
try:
    print(metadata.version(sys.argv[1]))
except metadata.PackageNotFoundError:
    pass
EOF
}

pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

# 1. the virtual environment
if [[ -x "$PY" ]]; then
    say "venv: exists at $VENV"
else
    "${PYTHON:-python3}" -m venv "$VENV"
    say "venv: created at $VENV ($("$PY" --version))"
fi

# 2. torch first, pinned, so that marketarena's 'torch>=2.2' is already satisfied
have="$(installed torch)"
if [[ "$have" == "$TORCH_VERSION" || "$have" == "$TORCH_VERSION+"* ]]; then
    say "torch: $have already installed"
else
    pip_install "torch==$TORCH_VERSION"
    say "torch: installed $(installed torch)"
fi

# 3. marketarena itself, editable with [dev]; redone only when pyproject.toml changes
stamp="$VENV/.marketarena-pyproject.sha256"
want="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -n "$(installed marketarena)" ]]; then
    say "marketarena: editable install up to date"
else
    pip_install -e "${REPO}[dev]"
    echo "$want" >"$stamp"
    say "marketarena: installed editable from $REPO with [dev]"
fi

# 4. pyinstrument (profiling the benchmark cases)
if [[ "$(installed pyinstrument)" == "$PYINSTRUMENT_VERSION" ]]; then
    say "pyinstrument: $PYINSTRUMENT_VERSION already installed"
else
    pip_install "pyinstrument==$PYINSTRUMENT_VERSION"
    say "pyinstrument: installed $PYINSTRUMENT_VERSION"
fi

# 5. gym-anytrading (needs gymnasium, numpy, pandas, matplotlib: all already there)
if [[ "$(installed gym-anytrading)" == "$GYM_ANYTRADING_VERSION" ]]; then
    say "gym-anytrading: $GYM_ANYTRADING_VERSION already installed"
else
    pip_install "gym-anytrading==$GYM_ANYTRADING_VERSION"
    say "gym-anytrading: installed $GYM_ANYTRADING_VERSION"
fi

# 6. gym-trading-env without its declared deps: flask==2.2.5, pyecharts, ccxt, nest_asyncio
# serve only its renderer and downloader; gym_trading_env.environments imports just
# gymnasium, numpy and pandas, which marketarena already brings.
if [[ "$(installed gym-trading-env)" == "$GYM_TRADING_ENV_VERSION" ]]; then
    say "gym-trading-env: $GYM_TRADING_ENV_VERSION already installed (--no-deps)"
else
    pip_install --no-deps "gym-trading-env==$GYM_TRADING_ENV_VERSION"
    say "gym-trading-env: installed $GYM_TRADING_ENV_VERSION with --no-deps"
fi

# 7. FinRL: not installed (its dependencies are huge). Only its two stock-trading env modules
# and its LICENSE are taken out of the wheel into benchmarks/.cache/finrl/.
finrl_dir="$CACHE/finrl"
finrl_files=(env_stocktrading.py env_stocktrading_np.py LICENSE VERSION)
finrl_ok=1
for f in "${finrl_files[@]}"; do [[ -f "$finrl_dir/$f" ]] || finrl_ok=0; done
if [[ $finrl_ok == 1 && "$(cat "$finrl_dir/VERSION")" == "$FINRL_VERSION" ]]; then
    say "finrl: $FINRL_VERSION env modules already in $finrl_dir"
else
    mkdir -p "$CACHE"
    shopt -s nullglob
    wheels=("$CACHE"/[Ff]in[Rr][Ll]-"$FINRL_VERSION"-*.whl)
    if [[ ${#wheels[@]} == 0 ]]; then
        "$PY" -m pip download --disable-pip-version-check -q --no-deps \
            "finrl==$FINRL_VERSION" -d "$CACHE"
        wheels=("$CACHE"/[Ff]in[Rr][Ll]-"$FINRL_VERSION"-*.whl)
        [[ ${#wheels[@]} -gt 0 ]] || { say "finrl: no wheel downloaded into $CACHE" >&2; exit 1; }
        say "finrl: downloaded $(basename "${wheels[0]}") (--no-deps) into $CACHE"
    fi
    shopt -u nullglob
    wheel="${wheels[0]}"
    rm -rf "$finrl_dir"
    mkdir -p "$finrl_dir"
    "$PY" - "$wheel" "$finrl_dir" "$FINRL_VERSION" <<'EOF'
import sys
import zipfile
from pathlib import Path

wheel, out, version = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
wanted = {
    "finrl/meta/env_stock_trading/env_stocktrading.py": "env_stocktrading.py",
    "finrl/meta/env_stock_trading/env_stocktrading_np.py": "env_stocktrading_np.py",
}
with zipfile.ZipFile(wheel) as zf:
    names = zf.namelist()
    licence = [n for n in names if n.endswith(".dist-info/LICENSE")]
    if not licence:
        raise SystemExit(f"no LICENSE in {wheel}")
    wanted[licence[0]] = "LICENSE"
    for member, target in wanted.items():
        if member not in names:
            raise SystemExit(f"{member} not in {wheel}")
        (out / target).write_bytes(zf.read(member))
(out / "VERSION").write_text(version + "\n")
EOF
    say "finrl: extracted ${finrl_files[*]} into $finrl_dir"
fi

say "done: $("$PY" -m pip list --disable-pip-version-check 2>/dev/null \
    | grep -iE '^(torch|marketarena|pyinstrument|gym-anytrading|gym-trading-env|gymnasium|numpy|pandas|stable.baselines3) ' \
    | awk '{printf "%s %s; ", $1, $2}')finrl $FINRL_VERSION (env modules only)"
