# Taleweaver: the bot with its model service in process, on the CPU by default.
#   docker build -t taleweaver .
#   docker run -e DISCORD_TOKEN -v taleweaver-data:/app/data taleweaver
# A CUDA image: --build-arg BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126   (the base must bring python3.11+ and pip)
ARG BASE=python:3.11-slim-bookworm

# Taleweaver's C kernels (model/native/*.c) are compiled here, where a C compiler is, and only the
# library goes into the image (model/native/build.py names it after its sources' hash).
FROM ${BASE} AS native
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY model/__init__.py ./model/
COPY model/native ./model/native
RUN TALEWEAVER_NATIVE_DIR=/opt/taleweaver/native python -m model.native.build

FROM ${BASE}

ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_PROGRESS_BARS=1 \
    TOKENIZERS_PARALLELISM=false \
    TALEWEAVER_NATIVE_DIR=/opt/taleweaver/native

WORKDIR /app
RUN useradd --create-home --uid 10001 taleweaver

# torch first, from the index that matches the image (CPU or CUDA), then everything else.
COPY requirements.txt ./
RUN python -m pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}" \
 && python -m pip install -r requirements.txt

COPY --from=native /opt/taleweaver/native /opt/taleweaver/native
COPY bot.py config.yaml ./
COPY core ./core
COPY cogs ./cogs
COPY store ./store
COPY model ./model
COPY ops ./ops
COPY playground ./playground
COPY models/tales ./models/tales

# data/ holds the preferences database and caches: the one writable place, kept in a volume.
RUN mkdir -p /app/data && chown taleweaver:taleweaver /app/data
USER taleweaver
VOLUME ["/app/data"]

# The operations endpoint listens on 127.0.0.1 by default, which is where the health check asks.
# To let Prometheus scrape from outside, mount a config.yaml with ops.host: 0.0.0.0 and publish 9108.
EXPOSE 9108
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)" || exit 1

# SIGTERM (docker stop) shuts down cleanly: running stories are told, the database is closed.
STOPSIGNAL SIGTERM
CMD ["python", "bot.py"]
