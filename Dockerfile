FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ACECHAT_DB_PATH=/data/acechat.db

WORKDIR /app
# Dependencies first, in a layer of their own: a change to acechat's code does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY README.md ./
COPY acechat ./acechat
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin acechat \
    && mkdir -p /data && chown acechat /data && chmod 700 /data

USER acechat
VOLUME ["/data"]
# Socket Mode and the Discord gateway need no inbound port; HTTP-mode Slack and /healthz do.
EXPOSE 3000 9100
# /healthz answers inside the container whatever ACECHAT_HEALTH_HOST publishes (it must not be 0 = off).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ACECHAT_HEALTH_PORT', '9100') + '/healthz', timeout=4)"
ENTRYPOINT ["acechat"]
CMD ["run"]
