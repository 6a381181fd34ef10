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
USER nobody
ENTRYPOINT []
CMD ["agentledger", "--help"]
