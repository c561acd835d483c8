//! The real `moor` binary as the tests run it: signing with the test's backup key, and without the caller's
//! variables that would change what it does (Redis, databases, keys, encryption).

use std::process::{Command, Output};

/// The caller's variables a test run of `moor` never sees.
const CLEARED: &[&str] = &[
    "REDIS_URL",
    "REDIS_SENTINELS",
    "REDIS_CLUSTER_NODES",
    "REDIS_PREFIX",
    "REDIS_PASSWORD",
    "DATABASE_URL",
    "RESTORE_DATABASE_URL",
    "DRILL_SCRATCH_DATABASE_URL",
    "DRILL_RESTORED_DATABASE_URL",
    "APP_KEY",
    "BACKUP_PREVIOUS_KEYS",
    "BACKUP_ENCRYPT",
];

/// Runs `moor args` signing with `backup_key`; `prepare` adds what the test needs (an S3 server's settings).
pub fn run(backup_key: &str, args: &[&str], prepare: impl FnOnce(&mut Command)) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_moor"));
    prepare(&mut cmd);
    for name in CLEARED {
        cmd.env_remove(name);
    }
    cmd.env("BACKUP_KEY", backup_key)
        .args(args)
        .output()
        .expect("run moor")
}

/// The stdout of a run that must succeed.
pub fn stdout_of_success(args: &[&str], out: Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "moor {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}
