# The image every Airflow container of docker-compose.yaml runs: the official Airflow image, our
# pinned requirements installed against constraints.txt (the tested lock), the system tools the
# upgrade operations call (ssh, pg_dump/pg_restore, zstd) and the DAG package itself.
#
# Stages:  app   Airflow services (api-server, scheduler, dag-processor, workers, triggerer, init)
#          demo  app + what the simulated estate and the SMTP sink need (compose profile `demo`)

# Tag convention of the official image: <airflow version>-python<major.minor>. Keep the version equal
# to the apache-airflow pin of requirements.txt (tests/unit/test_deployment.py checks it); the pip
# install below also fails the build if they differ.
FROM apache/airflow:3.3.2-python3.11 AS app

USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        openssh-client \
        postgresql-client \
        zstd \
    && apt-get autoremove -yqq --purge \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
USER airflow

# Requirements first: the dependency layer is rebuilt only when the pins change.
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/deps/
# "apache-airflow==${AIRFLOW_VERSION}" keeps pip from moving the base image's Airflow. The
# CeleryExecutor and its Redis client come with the base image (not in requirements.txt): the import
# check fails the build if a future base image stops bundling them.
RUN pip install --no-cache-dir \
        "apache-airflow==${AIRFLOW_VERSION}" \
        -r /opt/airflow/deps/requirements.txt \
        -c /opt/airflow/deps/constraints.txt \
    && python -c "import airflow.providers.celery, redis"

COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 scripts/ /opt/airflow/scripts/
COPY --chown=airflow:0 deploy/ /opt/airflow/deploy/

# The three Python packages of the project: managed_upgrade (include/), managed_upgrade_airflow
# (plugins/), crm_estate (scripts/). The same roots as pytest's pythonpath in pyproject.toml.
ENV PYTHONPATH=/opt/airflow/include:/opt/airflow/plugins:/opt/airflow/scripts

# Mount points of named volumes: a new volume takes over the owner of the directory it is mounted
# on, so the airflow user can write the passwords file and the estate without running as root.
RUN mkdir -p /opt/airflow/auth /opt/airflow/release-cache /tmp/crm-estate


FROM app AS demo

USER root
# openssh-server: the estate's three hosts; postgresql: its private config-DB cluster (no default
# cluster is created, the estate runs initdb itself); socat: relays the estate's loopback-only
# ports to the compose network (see deploy/estate/entrypoint.sh).
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/no-main-cluster.conf \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        openssh-server \
        postgresql \
        socat \
    && apt-get autoremove -yqq --purge \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && { [ -x /usr/local/bin/python3 ] || ln -s "$(command -v python3)" /usr/local/bin/python3; }
# ^ commands run over SSH get sshd's default PATH; the installer and bin/crm need python3 on it.
USER airflow

# The SMTP sink; its version comes from constraints.txt like everything else.
RUN pip install --no-cache-dir aiosmtpd -c /opt/airflow/deps/constraints.txt
