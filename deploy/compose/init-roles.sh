#!/bin/bash
# Postgres init script (docker-entrypoint-initdb.d; runs once, on an empty data directory, as the
# superuser). Creates the roles docs/operations.md describes. It is a shell script around SQL only
# so that the passwords come from the environment instead of this file.
set -euo pipefail
: "${PRAXIS_OWNER_PASSWORD:?}" "${PRAXIS_APP_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v owner_password="$PRAXIS_OWNER_PASSWORD" -v app_password="$PRAXIS_APP_PASSWORD" <<'SQL'
CREATE ROLE praxis_owner LOGIN CREATEROLE PASSWORD :'owner_password';
CREATE DATABASE praxis OWNER praxis_owner;
-- The first migration creates it too when absent; created here so praxis_app can join it now.
CREATE ROLE praxis_runtime NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
CREATE ROLE praxis_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE
  PASSWORD :'app_password' IN ROLE praxis_runtime;
SQL
