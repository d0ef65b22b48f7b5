#!/usr/bin/env bash
# Build Eraser's image for one or more architectures with podman and prove that each
# runs a real erasure: a worker in the container, against this host's PostgreSQL and
# Redis, completes a job submitted from the host. `make image-check` runs it for amd64
# and arm64 (arm64 under qemu emulation); not part of the default CI.
#
#   deploy/check-image.sh [amd64] [arm64]
#
# Needs root, podman (+ runc), debootstrap and qemu-user-static (Debian packages), the
# repo's .venv (make install), PostgreSQL at 127.0.0.1:5432 (trust) and Redis at
# 127.0.0.1:6379 (database 15 is used and flushed); it checks them all first and names
# what is missing (exit 2) before building anything. Public base images are not
# pulled: a Debian bookworm rootfs is built with debootstrap and imported as the base.
set -euo pipefail
cd "$(dirname "$0")/.."

ARCHES=("$@")
[ ${#ARCHES[@]} -eq 0 ] && ARCHES=(amd64 arm64)
ROOTFS=${ERASER_ROOTFS_DIR:-/var/tmp/eraser-rootfs}
PODMAN=(podman --storage-driver vfs --runtime runc --cgroup-manager=cgroupfs)
PG=${ERASER_CHECK_PG:-postgresql://root@127.0.0.1:5432}
REDIS=${ERASER_CHECK_REDIS:-redis://127.0.0.1:6379/15}
NOFILE="$(ulimit -n):$(ulimit -Hn)"  # podman's defaults exceed what this host allows
CA=/etc/ssl/certs/ca-certificates.crt
ERASER=.venv/bin/eraser
PY=.venv/bin/python

log() { echo "check-image: $*"; }
SUMMARY='import json, sys; d = json.load(sys.stdin); print(d["status"], d["total_rows"])'

# Everything the check needs, checked before anything runs: one message naming what to
# install, instead of a dozen "command not found" and a misleading verdict.
preflight() {
  local missing=() packages=() problems=()
  local -A package=([podman]=podman [runc]=runc [debootstrap]=debootstrap [psql]=postgresql-client)
  for tool in podman runc debootstrap psql; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      missing+=("$tool")
      packages+=("${package[$tool]}")
    fi
  done
  local arch
  for arch in "${ARCHES[@]}"; do
    if [ "$arch" = arm64 ] && [ "$(uname -m)" != aarch64 ] && \
       ! command -v qemu-aarch64-static >/dev/null 2>&1 && \
       [ ! -f /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
      missing+=("qemu-aarch64-static (arm64 emulation)")
      packages+=(qemu-user-static)
    fi
  done
  if [ "$(id -u)" != 0 ]; then
    problems+=("must run as root (podman with the vfs driver and runc, debootstrap)")
  fi
  if [ ! -x "$ERASER" ] || [ ! -x "$PY" ]; then
    problems+=("no $ERASER: run make install first")
  elif ! "$PY" -c "import redis, sys; redis.Redis.from_url(sys.argv[1]).ping()" "$REDIS" \
       >/dev/null 2>&1; then
    problems+=("Redis does not answer at $REDIS (ERASER_CHECK_REDIS)")
  fi
  if command -v psql >/dev/null 2>&1 && ! psql "$PG/postgres" -Atqc "SELECT 1" >/dev/null 2>&1; then
    problems+=("PostgreSQL does not answer at $PG (ERASER_CHECK_PG; trust authentication)")
  fi
  if [ ${#missing[@]} -eq 0 ] && [ ${#problems[@]} -eq 0 ]; then
    return 0
  fi
  log "cannot run; nothing was built or started:"
  if [ ${#missing[@]} -gt 0 ]; then
    log "  missing: ${missing[*]}"
    log "  install: apt-get install $(printf '%s\n' "${packages[@]}" | sort -u | paste -sd ' ')"
  fi
  local problem
  for problem in "${problems[@]}"; do
    log "  $problem"
  done
  exit 2
}
preflight


if [ ! -d /proc/sys/fs/binfmt_misc ] || [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
fi
# Register qemu for arm64 binaries (qemu-user-static ships the line; F: the kernel keeps
# the interpreter open, so it works inside containers too).
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && [ -f /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
  grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register
fi

check_arch() {
  local arch=$1 started=$SECONDS
  local base="localhost/eraser-base:$arch" image="localhost/eraser:$arch"
  if ! "${PODMAN[@]}" image exists "$base"; then
    log "$arch: debootstrap a bookworm rootfs"
    rm -rf "${ROOTFS:?}/$arch"
    mkdir -p "$ROOTFS"
    debootstrap --arch="$arch" --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$ROOTFS/$arch" >"$ROOTFS/$arch.log" 2>&1
    tar -C "$ROOTFS/$arch" -c . | "${PODMAN[@]}" import --arch "$arch" - "$base" >/dev/null
  fi
  log "$arch: build"
  local build_started=$SECONDS
  "${PODMAN[@]}" build --arch "$arch" --ulimit "nofile=$NOFILE" --ulimit nproc=4096:4096 --network host \
    --volume "$CA:/etc/pip-ca.crt:ro" --build-arg PIP_CERT=/etc/pip-ca.crt \
    --build-arg "BASE=$base" -f deploy/Dockerfile -t "$image" . >"/tmp/eraser-build-$arch.log" 2>&1
  local build_seconds=$((SECONDS - build_started))
  local machine
  machine=$("${PODMAN[@]}" run --arch "$arch" --rm --ulimit "nofile=$NOFILE" --ulimit nproc=4096:4096 --network host "$image" --help >/dev/null && \
            "${PODMAN[@]}" run --arch "$arch" --rm --ulimit "nofile=$NOFILE" --ulimit nproc=4096:4096 --network host --entrypoint uname "$image" -m)
  log "$arch: built in ${build_seconds}s; the container says uname -m = $machine"

  # A job store, a target database with three tenants, a registry.
  local suffix="${arch}_$$" work
  work=$(mktemp -d)
  local store="eraser_img_store_$suffix" target="eraser_img_target_$suffix"
  psql "$PG/postgres" -q -c "DROP DATABASE IF EXISTS $store" -c "CREATE DATABASE $store" \
    -c "DROP DATABASE IF EXISTS $target" -c "CREATE DATABASE $target"
  psql "$PG/$target" -q -c "CREATE TABLE accounts (id int PRIMARY KEY, tenant_id text NOT NULL)" \
    -c "CREATE TABLE items (id int PRIMARY KEY, account_id int NOT NULL REFERENCES accounts(id))" \
    -c "CREATE INDEX ON items (account_id)" \
    -c "INSERT INTO accounts SELECT g, 't' || (g % 3) FROM generate_series(1, 300) g" \
    -c "INSERT INTO items SELECT g, 1 + g % 300 FROM generate_series(1, 3000) g"
  printf '[subjects.tenant]\ncolumn = "tenant_id"\n[services.shop]\nurl_env = "SHOP_URL"\n' \
    >"$work/services.toml"
  chmod 755 "$work"
  chmod 644 "$work/services.toml"
  "$PY" -c "import redis; redis.Redis.from_url('$REDIS').flushdb()"
  local env=(-e "ERASER_DATABASE_URL=$PG/$store" -e "ERASER_BROKER_URL=$REDIS"
             -e "ERASER_RESULT_BACKEND=$REDIS" -e "ERASER_CONFIG=/etc/eraser/services.toml"
             -e "SHOP_URL=$PG/$target")
  "${PODMAN[@]}" run --arch "$arch" --rm --ulimit "nofile=$NOFILE" --ulimit nproc=4096:4096 --network host "${env[@]}" -v "$work:/etc/eraser:ro" "$image" db upgrade
  local name="eraser-check-$suffix"
  "${PODMAN[@]}" run --arch "$arch" -d --name "$name" --ulimit "nofile=$NOFILE" --ulimit nproc=4096:4096 --network host "${env[@]}" -v "$work:/etc/eraser:ro" \
    "$image" worker -c 2 --loglevel INFO >/dev/null
  local ok=0 answer=""
  answer=$(ERASER_DATABASE_URL="$PG/$store" ERASER_BROKER_URL="$REDIS" \
    ERASER_RESULT_BACKEND="$REDIS" ERASER_CONFIG="$work/services.toml" SHOP_URL="$PG/$target" \
    timeout 600 "$ERASER" submit --subject-kind tenant --subject t1 --wait --timeout 550 --json) || ok=$?
  local left
  left=$(psql "$PG/$target" -Atc "SELECT count(*) FROM accounts WHERE tenant_id = 't1'")
  local others
  others=$(psql "$PG/$target" -Atc "SELECT count(*) FROM accounts WHERE tenant_id <> 't1'")
  local alive
  alive=$("${PODMAN[@]}" exec "$name" eraser health worker --max-age 60 || true)
  "${PODMAN[@]}" logs "$name" >"/tmp/eraser-worker-$arch.log" 2>&1 || true
  "${PODMAN[@]}" rm -f "$name" >/dev/null
  psql "$PG/postgres" -q -c "DROP DATABASE IF EXISTS $store WITH (FORCE)" \
    -c "DROP DATABASE IF EXISTS $target WITH (FORCE)"
  "$PY" -c "import redis; redis.Redis.from_url('$REDIS').flushdb()"
  rm -rf "$work"
  local status
  status=$(printf '%s' "$answer" | "$PY" -c "$SUMMARY" 2>/dev/null || echo "no-answer")
  log "$arch: job $status; tenant rows left $left; other tenants' accounts $others; $alive;" \
      "whole check $((SECONDS - started))s"
  [ "$ok" -eq 0 ] && [ "$left" = 0 ] && [ "$others" = 200 ] && [[ "$status" == succeeded* ]]
}

failed=0
for arch in "${ARCHES[@]}"; do
  check_arch "$arch" || { log "$arch: FAILED"; failed=1; }
done
exit $failed
