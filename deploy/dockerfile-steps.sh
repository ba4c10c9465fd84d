#!/usr/bin/env bash
# Runs the Dockerfile's steps without a container engine, in a clean folder with a new venv, and then
# the image's command against the playground's Discord stand-in, with its health check. For machines
# where Docker cannot run (no daemon, or no registry to pull the base image from).
#   bash deploy/dockerfile-steps.sh [WORKDIR]
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
app="${1:-$(mktemp -d)}/app"
mkdir -p "$app"
echo "== clean folder: $app"
python3 -m venv "$app/.venv"
py="$app/.venv/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false
echo "== RUN pip install torch, then requirements.txt"
cp "$src/requirements.txt" "$app/"
"$py" -m pip install -q torch==2.13.0   # the Dockerfile takes it from TORCH_INDEX; here, from this disk
"$py" -m pip install -q -r "$app/requirements.txt"
echo "== COPY"
cp "$src/bot.py" "$src/config.yaml" "$app/"
for dir in core cogs store model ops playground; do cp -r "$src/$dir" "$app/$dir"; done
mkdir -p "$app/models" "$app/data" && cp -r "$src/models/tales" "$app/models/tales"
cd "$app"
echo "== CMD python bot.py, against the stand-in (python -m playground starts it)"
"$py" -m playground --port 0 > playground.log 2>&1 &
playground=$!
trap 'kill $playground 2>/dev/null || true' EXIT
for _ in $(seq 60); do
  if "$py" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/readyz', timeout=2)" 2>/dev/null; then
    break
  fi
  sleep 1
done
echo "== HEALTHCHECK"
"$py" -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4).read().decode())"
"$py" -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9108/readyz', timeout=4).read().decode())"
"$py" -c "import urllib.request; t = urllib.request.urlopen('http://127.0.0.1:9108/metrics').read().decode(); print(sum(l.startswith('taleweaver_') for l in t.splitlines()), 'taleweaver_ samples')"
echo "== STOPSIGNAL SIGTERM"
kill -TERM $playground
wait $playground && echo "exit 0"
ls data
grep -E "SIGTERM received|stopped cleanly|operations endpoint" playground.log
