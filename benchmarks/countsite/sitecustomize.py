"""Loaded by Python at start-up in processes that `benchmarks.msg_count` starts (this folder is
put first on their PYTHONPATH): installs `benchmarks.count_hooks` and writes its counts to
$VEILSHARE_COUNT_DIR/<pid>.json every 0.1 s. Nothing else imports it."""

import os

if os.environ.get("VEILSHARE_COUNT_DIR"):
    from benchmarks import count_hooks

    count_hooks.install()
    count_hooks.dump_periodically(os.environ["VEILSHARE_COUNT_DIR"])
