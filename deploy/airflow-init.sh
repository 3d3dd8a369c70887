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

python "$deploy_dir/airflow_init.py" write-passwords --customers "$deploy_dir/../include/customers"

airflow version
