# Environments shared by every checkout on this machine (sourced by setup.sh and test.sh).
#
# Installing requirements.lock takes minutes and 7 GB; its result depends only on the pinned
# files, the recipe below and the interpreter, so it is made once per machine under
# ~/.cache/triton-image-toolkit/envs/<kind>-<key> and reused. The key is a hash of exactly those
# inputs: a changed pin, recipe or Python makes a new environment, never a stale one.

ENV_CACHE="${TIK_ENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-image-toolkit/envs}"
# Bump when the way an environment is made changes (what env_key cannot see in the files).
ENV_RECIPE=1
# tensorrt-stubs goes in with --no-deps: its `tensorrt` dependency downloads TensorRT from
# NVIDIA's own index, which these machines cannot reach (type stubs only; see requirements-dev.txt).
TRT_STUBS="tensorrt-stubs==10.13.0.35.1"

# env_key PYTHON FILE... : 16 hex digits naming the environment PYTHON makes from FILEs.
env_key() {
    local py=$1; shift
    {
        echo "recipe $ENV_RECIPE $TRT_STUBS"
        "$py" -c 'import platform, sys; print(sys.version, platform.machine())'
        for f in "$@"; do echo "== $(basename "$f")"; cat "$f"; done
    } | sha256sum | cut -c1-16
}

# shared_env KIND KEY INSTALL_FUNCTION : prints the folder of the complete environment KIND-KEY,
# creating it first (under a lock; `INSTALL_FUNCTION <env>` fills it and must fail when any step
# fails: chain its steps with &&) when missing; fails when that install fails. A folder
# without the .complete mark (an interrupted install) is removed and made again.
shared_env() {
    local kind=$1 key=$2 install=$3 env
    env="$ENV_CACHE/$kind-$key"
    mkdir -p "$ENV_CACHE"
    (
        flock 9
        if [ ! -f "$env/.complete" ]; then
            echo "setup: making the shared $kind environment $env (once per machine)" >&2
            rm -rf "$env"
            # `|| exit`: set -e does not reach into a command substitution's subshell, and an
            # environment marked complete after a failed install would be reused by every checkout.
            if ! { "$PYTHON" -m venv "$env" >&2 && "$install" "$env" >&2; }; then
                echo "setup: making $env failed; removed it (run setup again)" >&2
                rm -rf "$env"
                exit 1
            fi
            date -u +%FT%TZ > "$env/.complete"
        fi
        touch "$env/.complete"      # last use, for prune_envs
    ) 9>"$ENV_CACHE/.$kind-$key.lock" || return 1
    echo "$env"
}

# prune_envs KIND KEEP : removes all but the KEEP most recently used KIND environments.
prune_envs() {
    local kind=$1 keep=$2 mark
    ls -t "$ENV_CACHE"/"$kind"-*/.complete 2>/dev/null | tail -n +"$((keep + 1))" | while read -r mark; do
        echo "setup: removing the unused environment $(dirname "$mark")" >&2
        rm -rf "$(dirname "$mark")"
    done
}
