#!/bin/sh
# The image's entrypoint (under tini): `streamapp "$@"` with the deployment's
# secrets, which never live in the image or the configuration file.
#
#   STREAMAPP_TOKENS_FILE  a TOML file of [[tokens]] tables (name, sha256,
#                          scopes, databases): the API clients, by digest.
#   STREAMAPP_SECRET_FILE  the unsubscribe/tracking HMAC key file shared by
#                          every worker (SPEC §13).
#
# Both are optional. Today's settings read tokens only from the one TOML file
# and the key only from <data_dir>/unsubscribe.key, so this script bridges:
# it writes an effective configuration (STREAMAPP_CONFIG, then the tokens
# file) under STREAMAPP_RUN_DIR and points STREAMAPP_CONFIG at it, and links
# the key file into the data folder. Once settings.py reads the token file and
# `[service] secret_file` itself, this shrinks to the development-digest check.
set -eu

die() {
    echo "streamapp-entrypoint: $*" >&2
    exit 78 # EX_CONFIG
}

config=${STREAMAPP_CONFIG:-/app/config/production.toml}
[ -r "$config" ] || die "STREAMAPP_CONFIG=$config cannot be read"

if [ -n "${STREAMAPP_TOKENS_FILE:-}" ]; then
    [ -r "$STREAMAPP_TOKENS_FILE" ] || die "STREAMAPP_TOKENS_FILE=$STREAMAPP_TOKENS_FILE cannot be read"
    run=${STREAMAPP_RUN_DIR:-/tmp/streamapp-config}
    mkdir -p "$run"
    name=$(basename "$config")
    folder=$(cd "$(dirname "$config")" && pwd -P)
    # Relative paths of the configuration (templates/) resolve against its
    # folder: give the effective copy the same neighbours.
    for entry in "$folder"/* "$folder"/.[!.]*; do
        [ -e "$entry" ] || continue
        [ "$(basename "$entry")" = "$name" ] && continue
        ln -sfn "$entry" "$run/$(basename "$entry")"
    done
    effective="$run/$name"
    rm -f "$effective"
    {
        cat "$config"
        printf '\n# ---- API tokens appended from %s by streamapp-entrypoint\n' "$STREAMAPP_TOKENS_FILE"
        cat "$STREAMAPP_TOKENS_FILE"
    } >"$effective"
    chmod 0600 "$effective"
    STREAMAPP_CONFIG=$effective
    export STREAMAPP_CONFIG
fi

# SPEC §13: the development tokens of config/streamapp.toml only ever work on
# a loopback address, and a container listens on every interface.
case "${STREAMAPP_WEB_HOST:-}" in
    127.* | localhost | ::1) ;;
    *)
        for digest in \
            c91cbbedf8c712e8e2b7517ddeca8fe4fde839ebd8339e0b2001363002b37712 \
            a91e970ba6ba154be9a86febe073a511fc3bbd3c069dfb7d9a10e1acddb2bc8d; do
            if grep -qi "$digest" "${STREAMAPP_CONFIG:-$config}"; then
                die "refusing to start: ${STREAMAPP_CONFIG:-$config} holds a development token (sha256 $digest) and the API is not on loopback"
            fi
        done
        ;;
esac

if [ -n "${STREAMAPP_SECRET_FILE:-}" ]; then
    [ -r "$STREAMAPP_SECRET_FILE" ] || die "STREAMAPP_SECRET_FILE=$STREAMAPP_SECRET_FILE cannot be read"
    [ "$(wc -c <"$STREAMAPP_SECRET_FILE")" -ge 16 ] || die "STREAMAPP_SECRET_FILE=$STREAMAPP_SECRET_FILE holds under 16 bytes"
    data=${STREAMAPP_DATA_DIR:-/var/lib/streamapp}
    mkdir -p "$data"
    key="$data/unsubscribe.key"
    if [ -e "$key" ] && [ ! -L "$key" ]; then
        # A key this worker created for itself before the shared one was set:
        # links it signed stop verifying. Kept aside, not deleted.
        echo "streamapp-entrypoint: $key was a per-worker key; kept as $key.local, using $STREAMAPP_SECRET_FILE" >&2
        mv -f "$key" "$key.local"
    fi
    ln -sfn "$STREAMAPP_SECRET_FILE" "$key"
fi

exec streamapp "$@"
