//! Marks privileged tests ignored when they cannot run here, so a skip shows in the summary as
//! `ignored` rather than a silent `ok`.
//!
//! Tests that need root (mount and network namespaces, chown) carry
//! `#[cfg_attr(tenet_unprivileged, ignore = "...")]`. `tenet_unprivileged` is set when the
//! build runs as a user other than root, unless `TENET_REQUIRE_PRIVILEGED_TESTS=1` (CI): then
//! the tests run and fail, since a skip must not pass there. The effective user is read from
//! `/proc/self/status` when the build script runs; a change of user is noticed through the
//! environment (`USER`, `SUDO_USER`, `HOME`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tenet_unprivileged)");
    for var in [
        "TENET_REQUIRE_PRIVILEGED_TESTS",
        "USER",
        "SUDO_USER",
        "HOME",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let required = std::env::var("TENET_REQUIRE_PRIVILEGED_TESTS").as_deref() == Ok("1");
    if !required && !effective_uid_is_root() {
        println!("cargo::rustc-cfg=tenet_unprivileged");
    }
}

/// The effective uid (second field of `Uid:`) is 0. Unknown counts as root, so that the tests
/// run and say for themselves what they miss.
fn effective_uid_is_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(true)
}
