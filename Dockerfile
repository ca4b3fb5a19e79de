# Worker and simulator image for docker-compose.yml.
FROM python:3.11-slim
WORKDIR /srv
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
