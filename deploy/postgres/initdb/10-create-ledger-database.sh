#!/usr/bin/env bash
# Creates the project ledger's own database and role next to Airflow's metadata database. The postgres
# image runs this once, when it initialises an empty data volume; airflow-init then migrates the schema.
set -euo pipefail

: "${LEDGER_DB_PASSWORD:?LEDGER_DB_PASSWORD must be set (see .env.example)}"
LEDGER_DB_NAME="${LEDGER_DB_NAME:-ledger}"
LEDGER_DB_USER="${LEDGER_DB_USER:-ledger}"

# psql quotes the variables itself (:"identifier", :'literal'); nothing is pasted into the SQL text.
psql -v ON_ERROR_STOP=1 \
  --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  --set=ledger_db="$LEDGER_DB_NAME" --set=ledger_user="$LEDGER_DB_USER" \
  --set=ledger_password="$LEDGER_DB_PASSWORD" <<'SQL'
CREATE ROLE :"ledger_user" LOGIN PASSWORD :'ledger_password';
CREATE DATABASE :"ledger_db" OWNER :"ledger_user";
REVOKE ALL ON DATABASE :"ledger_db" FROM PUBLIC;
SQL
echo "created database ${LEDGER_DB_NAME} owned by ${LEDGER_DB_USER}"
