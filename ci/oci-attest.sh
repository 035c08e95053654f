#!/usr/bin/env bash
# Installs an oci-attest release and runs one CI command under it. The GitHub Action
# (action.yml) runs this file; the GitLab template (ci/gitlab/oci-attest.gitlab-ci.yml) carries
# a verbatim copy (tests/tests/ci_install.rs keeps them identical and runs both).
#
#   oci-attest.sh install   download the release tarball, check its SHA-256, unpack it;
#                           prints the binary's path on stdout
#   oci-attest.sh run       run OCI_ATTEST_COMMAND under `sudo -E oci-attest run`
#
# install reads:
#   OCI_ATTEST_VERSION        release to install (e.g. 0.1.0)
#   OCI_ATTEST_DOWNLOAD_URL   where the release's files are (default: the GitHub release
#                             v$OCI_ATTEST_VERSION of OCI_ATTEST_REPOSITORY)
#   OCI_ATTEST_SHA256         optional: the tarball's expected SHA-256; then the downloaded
#                             SHA256SUMS is not trusted
#   OCI_ATTEST_INSTALL_DIR    where to unpack (default: $RUNNER_TEMP or /tmp)
# run reads:
#   OCI_ATTEST_BIN            the binary (what install printed)
#   OCI_ATTEST_COMMAND        the command, run by bash as the job's user
#   OCI_ATTEST_KEY            the signing key: PEM text, or the path of a PEM file (a GitLab
#                             file variable), which is removed once copied
#   OCI_ATTEST_STEP, OCI_ATTEST_OUTFILE, OCI_ATTEST_ATTESTATIONS, OCI_ATTEST_TRACE,
#   OCI_ATTEST_ATTACH (true/false), OCI_ATTEST_ARGS (more `oci-attest run` options)
#   OCI_ATTEST_RUN_AS         the user to run the command as when the job itself runs as root
#   OCI_ATTEST_OUTPUTS        file that receives OCI_ATTEST_OUTFILE=... and OCI_ATTEST_DIGEST=...
#
# The key never reaches the command: it is copied into a root-only directory (0700, file 0600),
# dropped from the environment before the command starts, and deleted afterwards; oci-attest
# runs as root (it loads the eBPF tracer) and runs the command as the job's user, which sudo
# names in SUDO_UID/SUDO_GID.
set -euo pipefail

readonly TARGET=x86_64-unknown-linux-musl
# How root's part is done: through sudo by a CI job's user, directly when the job is root.
# oci-attest itself gets the job's environment (-E) to record it and pass it to the command.
AS_ROOT=(sudo)
OCI_ATTEST_AS_ROOT=(sudo -E)
KEY_DIR=""

log() { printf 'oci-attest: %s\n' "$*" >&2; }
fail() { log "error: $*"; exit 1; }

install_release() {
    local version="${OCI_ATTEST_VERSION:?OCI_ATTEST_VERSION is not set}"
    version="${version#v}"
    [ "$(uname -m)" = x86_64 ] || fail "releases are built for x86_64 only, this machine is $(uname -m)"
    local base="${OCI_ATTEST_DOWNLOAD_URL:-}"
    if [ -z "$base" ]; then
        [ -n "${OCI_ATTEST_REPOSITORY:-}" ] || fail "set OCI_ATTEST_DOWNLOAD_URL or OCI_ATTEST_REPOSITORY"
        base="https://github.com/${OCI_ATTEST_REPOSITORY}/releases/download/v${version}"
    fi
    local stem="oci-attest-${version}-${TARGET}"
    local dir="${OCI_ATTEST_INSTALL_DIR:-${RUNNER_TEMP:-/tmp}/oci-attest-${version}}"
    local download="$dir/download"
    rm -rf -- "$download" "${dir:?}/$stem"
    mkdir -p -- "$download"
    log "downloading $stem.tar.gz from $base"
    curl --fail --silent --show-error --location --retry 3 \
        --output "$download/$stem.tar.gz" "$base/$stem.tar.gz"
    if [ -n "${OCI_ATTEST_SHA256:-}" ]; then
        printf '%s  %s\n' "$OCI_ATTEST_SHA256" "$stem.tar.gz" > "$download/expected.sha256"
    else
        curl --fail --silent --show-error --location --retry 3 \
            --output "$download/SHA256SUMS" "$base/SHA256SUMS"
        grep -E "^[0-9a-f]{64}  $stem\.tar\.gz\$" "$download/SHA256SUMS" > "$download/expected.sha256" \
            || fail "SHA256SUMS from $base lists no $stem.tar.gz"
    fi
    (cd "$download" && sha256sum --check --strict --quiet expected.sha256 >&2) \
        || fail "$stem.tar.gz does not match its SHA-256: not installed"
    tar -xzf "$download/$stem.tar.gz" --no-same-owner -C "$dir"
    local bin="$dir/$stem/oci-attest"
    "$bin" --version >&2
    printf '%s\n' "$bin"
}

run_attested() {
    local bin="${OCI_ATTEST_BIN:?OCI_ATTEST_BIN is not set (run install first)}"
    local command="${OCI_ATTEST_COMMAND:?OCI_ATTEST_COMMAND is not set}"
    [ -n "${OCI_ATTEST_KEY:-}" ] || fail "OCI_ATTEST_KEY is not set (the signing key, PEM)"
    local outfile="${OCI_ATTEST_OUTFILE:-oci-attest.att.json}"
    case "$outfile" in /*) ;; *) outfile="$PWD/$outfile" ;; esac

    # As root (a container job), sudo would name root as the invoker: say whom to run as.
    local -a identity=()
    if [ "$(id -u)" = 0 ]; then
        [ -n "${OCI_ATTEST_RUN_AS:-}" ] || fail "the job runs as root: set OCI_ATTEST_RUN_AS to the unprivileged user the command runs as"
        AS_ROOT=()
        OCI_ATTEST_AS_ROOT=()
        identity=(--run-as "$OCI_ATTEST_RUN_AS")
    fi

    # In sticky /tmp, so the job's user can neither read nor move it.
    KEY_DIR="$("${AS_ROOT[@]}" mktemp -d /tmp/oci-attest-key.XXXXXX)"
    trap '"${AS_ROOT[@]}" rm -rf -- "$KEY_DIR"' EXIT
    if [ -f "$OCI_ATTEST_KEY" ]; then
        "${AS_ROOT[@]}" install -m 0600 -o root -g root -- "$OCI_ATTEST_KEY" "$KEY_DIR/key.pem"
        rm -f -- "$OCI_ATTEST_KEY"
    else
        printf '%s\n' "$OCI_ATTEST_KEY" | "${AS_ROOT[@]}" install -m 0600 -o root -g root /dev/stdin "$KEY_DIR/key.pem"
    fi
    unset OCI_ATTEST_KEY

    local -a args=(run -k "$KEY_DIR/key.pem" -o "$outfile" "${identity[@]}")
    [ -z "${OCI_ATTEST_STEP:-}" ] || args+=(--step "$OCI_ATTEST_STEP")
    [ -z "${OCI_ATTEST_ATTESTATIONS:-}" ] || args+=(--attestations "$OCI_ATTEST_ATTESTATIONS")
    [ -z "${OCI_ATTEST_TRACE:-}" ] || args+=(--trace "$OCI_ATTEST_TRACE")
    case "${OCI_ATTEST_ATTACH:-false}" in
        true) args+=(--attach) ;;
        false | "") ;;
        *) fail "OCI_ATTEST_ATTACH must be true or false, not '$OCI_ATTEST_ATTACH'" ;;
    esac
    local -a extra=()
    [ -z "${OCI_ATTEST_ARGS:-}" ] || read -r -a extra <<< "$OCI_ATTEST_ARGS"

    # sudo resets PATH (secure_path) for oci-attest, which is right for a root process; the
    # command gets the job's PATH back through env.
    local code=0
    "${OCI_ATTEST_AS_ROOT[@]}" "$bin" "${args[@]}" "${extra[@]}" -- \
        /usr/bin/env "PATH=$PATH" bash -c "$command" || code=$?

    local digest=""
    if [ -s "$outfile" ]; then
        # The pushed image is the statement's manifestdigest subject.
        digest="$(sed -n 's/.*"payload" *: *"\([^"]*\)".*/\1/p' "$outfile" | base64 -d \
            | grep -o 'manifestdigest:[0-9a-f]\{64\}' | head -n 1 || true)"
        digest="${digest:+sha256:${digest#manifestdigest:}}"
    fi
    if [ -n "${OCI_ATTEST_OUTPUTS:-}" ]; then
        printf 'OCI_ATTEST_OUTFILE=%s\nOCI_ATTEST_DIGEST=%s\n' "$outfile" "$digest" >> "$OCI_ATTEST_OUTPUTS"
    fi
    [ "$code" = 0 ] || log "oci-attest run exited $code"
    return "$code"
}

case "${1:-}" in
    install) install_release ;;
    run) run_attested ;;
    *) fail "usage: $0 install|run" ;;
esac
