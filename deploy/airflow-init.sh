#!/usr/bin/env bash
# airflow-init of docker-compose.yaml: runs once before the Airflow services start (they wait for it to
# finish successfully). Each step is idempotent, so `docker compose up` can run it again at any time.
set -euo pipefail
deploy_dir="$(cd "$(dirname "$0")" && pwd)"

python "$deploy_dir/airflow_init.py" check-secrets

echo "airflow-init: migrating the Airflow metadata database"
airflow db migrate

echo "airflow-init: migrating the project ledger"
python -m managed_upgrade.ledger migrate

# The FAB auth manager's users and the per-customer roles (customer_<id>, from the customer configs),
# before any dag-processor syncs a DAG's access_control. The users file holds passwords: a private
# temporary file, gone when this script ends.
customers="$deploy_dir/../include/customers"
users_file="$(mktemp)"
trap 'rm -f "$users_file"' EXIT
python "$deploy_dir/airflow_init.py" fab-users "$users_file" --customers "$customers"
echo "airflow-init: creating the FAB users and the per-customer roles"
python -m managed_upgrade_airflow.access_control sync --customers "$customers" --users "$users_file"

airflow version
