# A patch release: a rebuild gets the Python the image was tested with. Move it on deliberately, and
# regenerate constraints.txt with that Python (scripts/pin-constraints.sh).
FROM python:3.11.14-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ACECHAT_DB_PATH=/data/acechat.db

WORKDIR /app
# Dependencies first, in a layer of their own (a change to acechat's code does not reinstall them), at
# the exact versions constraints.txt pins.
COPY pyproject.toml constraints.txt /tmp/deps/
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/deps/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/deps/requirements.txt \
    && pip install -r /tmp/deps/requirements.txt -c /tmp/deps/constraints.txt \
    && rm -rf /tmp/deps
# Built outside /app and removed with its build/ and *.egg-info: only the installed package stays.
COPY pyproject.toml README.md /tmp/src/
COPY acechat /tmp/src/acechat
RUN pip install --no-deps /tmp/src \
    && rm -rf /tmp/src \
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
