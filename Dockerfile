# Worker and simulator image for docker-compose.yml.
# The status page's charting library from the npm registry (web/package-lock.json).
FROM node:20-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM python:3.11-slim
WORKDIR /srv
COPY --from=web /web/node_modules ./web/node_modules
COPY pyproject.toml README.md ./
COPY app ./app
COPY devstack ./devstack
COPY proto ./proto
COPY config ./config
RUN pip install --no-cache-dir .
ENV INGEST__SERVICE__DATA_DIR=/data INGEST__SERVICE__WEB_HOST=0.0.0.0
VOLUME /data
EXPOSE 6066
CMD ["faust", "-A", "app", "worker", "-l", "info"]
