# agentledger worker / projector image. Installs exactly the versions CI tested
# (constraints.txt). The data dir is absolute and writable by the unprivileged user.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY catalog catalog
COPY domain domain
COPY handlers handlers
COPY infra infra
COPY projections projections
RUN pip install --no-cache-dir -c constraints.txt . && rm -rf /src
ENV AGENTLEDGER_DATA_DIR=/var/lib/agentledger
RUN mkdir -p /var/lib/agentledger && chown nobody /var/lib/agentledger
WORKDIR /var/lib/agentledger
# `agentledger worker` and `agentledger project` serve GET /healthz and GET /readyz here.
ENV AGENTLEDGER_HTTP_HOST=0.0.0.0 AGENTLEDGER_HTTP_PORT=8080
EXPOSE 8080
# No curl in the image: python asks /readyz (200 when ready; a 503 or no answer fails).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=3)"]
USER nobody
ENTRYPOINT []
CMD ["agentledger", "--help"]
