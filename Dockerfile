# myagent-ws: serve agent files mounted at /app/agents.
#   docker build -t myagent-ws .
#   docker run -p 8080:8080 -v ./agents:/app/agents myagent-ws /app/agents/my_agent.py
# Keys the agent's tools need: declare them in the agent file (env=["SERPER_API_KEY"]) and
# pass them to the container (besides the allow list, only declared names reach agent code):
#   docker run -p 8080:8080 -e OPENAI_API_KEY -e SERPER_API_KEY -v ./agents:/app/agents \
#     myagent-ws /app/agents/my_agent.py
#   docker run -p 8080:8080 -v ./agents:/app/agents myagent-ws /app/agents   # each *.py at /NAME
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    MYAGENT_WS_HOST=0.0.0.0 \
    MYAGENT_WS_PORT=8080 \
    MYAGENT_WS_STATE_DIR=/var/lib/myagent-ws

WORKDIR /src
COPY pyproject.toml README.md ./
COPY myagent ./myagent
COPY docker/install.sh ./docker/install.sh
RUN sh docker/install.sh /src /opt/venv \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin agent \
    && mkdir -p /app/agents /var/lib/myagent-ws \
    && chown agent:agent /var/lib/myagent-ws

COPY examples/weather_agent.py /app/agents/agent.py
WORKDIR /app
USER 10001
EXPOSE 8080
# SIGTERM starts the graceful drain (see docs/operations.md); exec form below makes
# myagent-ws PID 1's direct target, so the signal reaches it.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]
ENTRYPOINT ["myagent-ws", "server"]
CMD ["/app/agents/agent.py"]
