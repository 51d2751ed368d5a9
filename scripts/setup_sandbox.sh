#!/bin/sh
# Best-effort, idempotent setup for promptintern.sandbox's strongest mode: install bubblewrap.
#   sh scripts/setup_sandbox.sh
# Installs only as root with apt-get; otherwise (or on any failure) says so and exits 0, because the
# sandbox detects what works at run time (bwrap -> namespaces -> rlimits) and never assumes bwrap.
# Then checks that bwrap can run as an unprivileged uid (it needs unprivileged user namespaces).

say() { echo "setup_sandbox: $*"; }

if command -v bwrap >/dev/null 2>&1; then
  say "bubblewrap already installed ($(bwrap --version 2>/dev/null))"
elif [ "$(id -u)" != "0" ]; then
  say "not root: bubblewrap not installed; the sandbox will use mode 'rlimits' (see promptintern/sandbox.py)"
elif ! command -v apt-get >/dev/null 2>&1; then
  say "no apt-get: bubblewrap not installed; the sandbox will use mode 'namespaces'"
else
  say "installing bubblewrap with apt-get"
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
     || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null 2>&1; }; then
    say "installed $(bwrap --version 2>/dev/null)"
  else
    say "apt-get install bubblewrap failed; the sandbox will use mode 'namespaces'"
  fi
fi

if command -v bwrap >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v setpriv >/dev/null 2>&1; then
  if setpriv --reuid=60000 --regid=60000 --clear-groups bwrap --unshare-all --ro-bind /usr /usr \
       --ro-bind-try /lib /lib --ro-bind-try /lib64 /lib64 --ro-bind-try /bin /bin /bin/sh -c true >/dev/null 2>&1; then
    say "bwrap runs as uid 60000: mode 'bwrap' available"
  else
    say "bwrap is installed but cannot run as uid 60000 (unprivileged user namespaces off?): mode 'namespaces' will be used"
  fi
fi
exit 0
