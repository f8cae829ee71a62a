#!/bin/sh
# Create the secrets docker-compose.yml mounts into both workers, once:
#
#   deploy/compose/init-secrets.sh [DIR]      # DIR defaults to ./secrets
#
#   DIR/streamapp.keys   the unsubscribe/tracking HMAC key (SPEC §13: one key
#                        per line, the first signs; keep it across upgrades,
#                        or every unsubscribe link already sent stops working)
#   DIR/tokens.toml      API tokens by SHA-256 digest ([[tokens]] tables); one
#                        admin token is created and printed once, here only
#
# Existing files are left alone, so running it again is safe. DIR is kept
# out of git and of the image (.dockerignore); it is 0700 on the host, and
# its files 0644 so that the worker (uid 10001) can read the bind-mounted
# copies in the container.
set -eu

dir=${1:-${STREAMAPP_SECRETS_DIR:-./secrets}}
umask 077
mkdir -p "$dir"
chmod 0700 "$dir"

random_hex() { # $1 bytes of /dev/urandom as lowercase hex, no newline
    od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

sha256_hex() {
    if command -v sha256sum >/dev/null 2>&1; then
        printf '%s' "$1" | sha256sum | cut -d' ' -f1
    else
        printf '%s' "$1" | shasum -a 256 | cut -d' ' -f1
    fi
}

if [ ! -e "$dir/streamapp.keys" ]; then
    random_hex 32 >"$dir/streamapp.keys"
    echo >>"$dir/streamapp.keys"
    chmod 0644 "$dir/streamapp.keys"
    echo "created $dir/streamapp.keys"
fi

if [ ! -e "$dir/tokens.toml" ]; then
    token=$(random_hex 32)
    cat >"$dir/tokens.toml" <<EOF
# API tokens of this deployment, by SHA-256 digest (the tokens themselves are
# never stored). Add one table per client:
#   printf '%s' "\$TOKEN" | sha256sum
[[tokens]]
name = "admin"
sha256 = "$(sha256_hex "$token")"
scopes = ["recipients:read", "recipients:write", "send", "admin"]
EOF
    chmod 0644 "$dir/tokens.toml"
    echo "created $dir/tokens.toml with one admin token; it is shown only now:"
    echo "  $token"
fi
