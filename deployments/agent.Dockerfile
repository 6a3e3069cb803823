# The edgeops agent as a slim, non-root container. Build the wheel first, from the repository root:
#   python -m build --wheel            (or: pip wheel --no-deps -w dist .)
#   docker build -f deployments/agent.Dockerfile -t edgeops-agent .
#   docker run -d --name edgeops-agent -v edgeops-agent-data:/var/lib/edgeops-agent \
#       -v /etc/edgeops-agent:/etc/edgeops-agent:ro --env-file /etc/edgeops-agent/agent.env \
#       -p 127.0.0.1:8765:8765 edgeops-agent
# In a container set http = "0.0.0.0:8765" in agent.toml and publish the port on 127.0.0.1 only (as above).
# The wheel is installed WITHOUT extras: onnxruntime, numpy, paho-mqtt, cryptography, nothing else.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/edgeops-agent --shell /usr/sbin/nologin \
        edgeops-agent \
    && install -d -o edgeops-agent -g edgeops-agent -m 0750 /var/lib/edgeops-agent

COPY dist/edgeops-*.whl /tmp/wheels/
RUN pip install /tmp/wheels/edgeops-*.whl && rm -rf /tmp/wheels \
    && edgeops-agent --version

USER edgeops-agent
WORKDIR /var/lib/edgeops-agent
VOLUME ["/var/lib/edgeops-agent"]
EXPOSE 8765

HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8765/v1/health', timeout=2)"]

# SIGTERM (docker stop) makes the agent store its telemetry window and publish "offline" before exiting.
STOPSIGNAL SIGTERM
ENTRYPOINT ["edgeops-agent"]
CMD ["run", "--config", "/etc/edgeops-agent/agent.toml"]
