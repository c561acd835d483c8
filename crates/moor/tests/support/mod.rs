//! What the moor tests that start real `inventory` processes share: the binary (built if missing) and the
//! key its test instances sign cookies with.

use std::path::PathBuf;
use std::sync::Once;

/// The key every test app signs cookies with.
pub const APP_KEY: &str = "base64:dGVzdCBrZXkgdGhhdCBpcyBleGFjdGx5IDMyIGJ5dGVz";

/// `target/<profile>/`, where cargo put this test and the `inventory` binary.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir.parent().expect("profile dir").to_owned()
    } else {
        dir.to_owned()
    }
}

/// The `inventory` binary next to this test, built first if it is missing.
pub fn inventory_binary() -> PathBuf {
    static BUILD: Once = Once::new();
    let dir = target_dir();
    let bin = dir.join("inventory");
    BUILD.call_once(|| {
        if bin.exists() {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-p", "inventory"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build -p inventory");
        assert!(status.success(), "cargo build -p inventory failed");
    });
    assert!(bin.exists(), "{} is missing after the build", bin.display());
    bin
}
