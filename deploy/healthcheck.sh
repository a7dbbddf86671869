#!/bin/bash
# Container HEALTHCHECK for images without curl: GET /health/live over bash's /dev/tcp.
# Exit 0 only when the status line is HTTP/1.x 200. PRAXIS_HEALTH_PORT overrides the port.
set -euo pipefail
port="${PRAXIS_HEALTH_PORT:-8080}"
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET /health/live HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
IFS= read -r -t 3 status <&3
exec 3>&-
[[ "${status}" =~ ^HTTP/1\.[01]\ 200\  ]]
