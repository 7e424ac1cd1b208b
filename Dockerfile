FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ACECHAT_DB_PATH=/data/acechat.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY core ./core
COPY storage ./storage
COPY bots ./bots
COPY demo ./demo
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin acechat \
    && mkdir -p /data && chown acechat /data

USER acechat
VOLUME ["/data"]
# Socket Mode and the Discord gateway need no inbound port; HTTP-mode Slack and /healthz do.
EXPOSE 3000 9100
ENTRYPOINT ["acechat"]
CMD ["run"]
