//! `cfg(krps_ci)`: set when the tests are built with `CI` in the environment, as `.ci/run`
//! does.
//!
//! A few tests need what a developer's machine may lack (a Redis server, root). Without
//! `CI` they are `#[ignore]`d with that reason, so cargo's output says they did not run
//! (rather than an "ok" for a test that checked nothing); in CI they run, and fail if what
//! they need is missing. `CI=1 cargo test` or `-- --ignored` runs them anywhere.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(krps_ci)");
    println!("cargo::rerun-if-env-changed=CI");
    let ci = std::env::var("CI").unwrap_or_default();
    if !ci.is_empty() && ci != "0" && ci != "false" {
        println!("cargo::rustc-cfg=krps_ci");
    }
}
