# Lydian hub image: `docker build -t lydian-hub .`, run with `docker compose up` (docker-compose.yml).
# Stage 1 builds the wheel (migrations and the plugin template are packed into it); stage 2 installs
# only that wheel and its dependencies, so the image holds no source checkout and no build tools.

FROM python:3.11-slim AS build
WORKDIR /src
# The whole context, as trimmed by .dockerignore: the wheel build picks what pyproject.toml names.
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
# With the `adapters` extra: the Slack and Discord bridges are plugins loaded at start.
RUN pip install "$(echo /wheels/*.whl)[adapters]" && rm -rf /wheels \
    && useradd --system --user-group --uid 10001 --create-home --home-dir /var/lib/lydian lydian

# Without DATABASE_URL the hub falls back to SQLite (and a generated secret) in LYDIAN_DATA_DIR.
ENV LYDIAN_DATA_DIR=/var/lib/lydian \
    LYDIAN_PORT=8000
WORKDIR /var/lib/lydian
USER lydian
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LYDIAN_PORT', '8000') + '/healthz', timeout=3)"]

CMD ["lydian", "serve", "--host", "0.0.0.0"]
