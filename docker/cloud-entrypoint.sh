#!/bin/sh
# Entrypoint of the cloud image (docker/Dockerfile.cloud).
#   executor ...   a Spark-on-Kubernetes executor: Spark starts executor pods of this image with
#                  the single argument "executor" and the SPARK_* variables set below, as the
#                  official Spark images' entrypoint does.
#   anything else  hyperfleet with those arguments (serve, spark run, ...).
set -eu
if [ "${1:-}" = "executor" ]; then
  shift
  # shellcheck disable=SC2086  # SPARK_EXECUTOR_JAVA_OPTS holds several options on purpose
  exec java ${SPARK_EXECUTOR_JAVA_OPTS:-} \
    -Xms"${SPARK_EXECUTOR_MEMORY}" -Xmx"${SPARK_EXECUTOR_MEMORY}" \
    -cp "${SPARK_HOME}/jars/*" \
    org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
    --driver-url "${SPARK_DRIVER_URL}" \
    --executor-id "${SPARK_EXECUTOR_ID}" \
    --cores "${SPARK_EXECUTOR_CORES}" \
    --app-id "${SPARK_APPLICATION_ID}" \
    --hostname "${SPARK_EXECUTOR_POD_IP}" \
    --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" \
    --podName "${SPARK_EXECUTOR_POD_NAME:-}"
fi
exec hyperfleet "$@"
