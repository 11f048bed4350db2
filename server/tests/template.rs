//! `kong-rust-pluginserver new`: the crate it creates, with no flag and outside any checkout,
//! builds, passes its own tests, and its library runs in `try` and loads in the daemon.
//! The README's plugin snippets compile and pass as given.
//!
//! The crates are created in temporary directories outside the repository and built with
//! cargo in `<target dir>/template-check`, so later runs reuse the registry dependencies
//! (and `--offline`: they are the workspace's, already downloaded). `new` carries the
//! workspace's Cargo.lock into the crate, so it resolves the versions the daemon was built
//! with.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use kong_rust_pdk::Phase;
use kong_rust_pluginserver::loader::{self, LoadOptions};

const NAME: &str = "my-first-plugin";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

fn daemon() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kong-rust-pluginserver"))
}

/// `<target dir>/template-check`, next to this test's own `<target dir>/<profile>/deps/`.
fn check_target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test runs from <target>/<profile>/deps");
    target.join("template-check")
}

fn succeed(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn cargo(dir: &Path, args: &[&str]) -> Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(args)
        .arg("--offline")
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", check_target_dir())
        .output()
        .unwrap();
    succeed(
        &format!("cargo {} in {}", args.join(" "), dir.display()),
        out,
    )
}

/// The library copied where the daemon accepts it (readable by anyone, writable by us only).
fn install(library: &Path, into: &Path) -> PathBuf {
    let installed = into.join(library.file_name().unwrap());
    std::fs::copy(library, &installed).unwrap();
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o644)).unwrap();
    installed
}

fn try_file(library: &Path, args: &[&str]) -> Output {
    daemon()
        .args(["try", NAME, "--file"])
        .arg(library)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn new_with_no_flag_builds_tests_and_runs_outside_the_repository() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(!tmp.path().starts_with(workspace()));
    let dir = tmp.path().join(NAME);
    let mut timings: Vec<(&str, Duration)> = Vec::new();
    let mut step = Instant::now();
    let mut lap = |name, timings: &mut Vec<(&str, Duration)>| {
        timings.push((name, step.elapsed()));
        step = Instant::now();
    };

    let out = succeed(
        "new",
        daemon()
            .args(["new", NAME, "--path"])
            .arg(&dir)
            .output()
            .unwrap(),
    );
    lap("new", &mut timings);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("libmy_first_plugin.so"), "{stdout}");
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("kong-rust-pdk = { path = \"vendor/kong-rust-pdk\" }"),
        "{manifest}"
    );
    assert!(dir.join("Cargo.lock").is_file());

    // Formatted as rustfmt wants it, so `cargo fmt` on a new crate changes nothing.
    let rustfmt = Command::new("rustfmt")
        .args(["--check", "--edition", "2024"])
        .arg(dir.join("src/lib.rs"))
        .output()
        .unwrap();
    assert!(
        rustfmt.status.success(),
        "{}",
        String::from_utf8_lossy(&rustfmt.stdout)
    );

    let test = cargo(&dir, &["test"]);
    lap("cargo test", &mut timings);
    let stdout = String::from_utf8_lossy(&test.stdout);
    for name in [
        "refuses_a_request_without_the_header",
        "tags_an_accepted_request",
        "a_config_of_the_wrong_type_is_refused_with_the_field",
        "kong_accepts_the_schema_and_is_told_about_access_only",
    ] {
        assert!(
            stdout.contains(&format!("tests::{name} ... ok")),
            "{name} did not pass:\n{stdout}"
        );
    }
    // #[kong_rust_pdk::plugin] adds a test that checks the schema as the daemon will.
    assert!(
        stdout.contains("test kong_rust_pdk_config_schema_is_valid ... ok"),
        "{stdout}"
    );
    assert!(stdout.contains("test result: ok. 5 passed"), "{stdout}");

    let library = check_target_dir().join("release/libmy_first_plugin.so");
    let _ = std::fs::remove_file(&library);
    cargo(&dir, &["build", "--release"]);
    lap("cargo build --release", &mut timings);
    assert!(library.is_file(), "no {}", library.display());
    let plugins = tempfile::tempdir().unwrap();
    let installed = install(&library, plugins.path());

    let refused = try_file(&installed, &[]);
    lap("try --file", &mut timings);
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert_eq!(refused.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("response (from the plugin): 401"),
        "{stdout}"
    );
    let tagged = succeed(
        "try",
        try_file(
            &installed,
            &[
                "--config-json",
                r#"{"tag": "checked"}"#,
                "-H",
                "x-api-key: k",
            ],
        ),
    );
    let stdout = String::from_utf8_lossy(&tagged.stdout);
    assert!(stdout.contains("  x-my-first-plugin: checked"), "{stdout}");

    let total: Duration = timings.iter().map(|(_, d)| *d).sum();
    eprintln!("new → cargo test → cargo build --release → try --file, from an empty directory:");
    for (name, duration) in &timings {
        eprintln!("  {name:<24} {:>6.1} s", duration.as_secs_f64());
    }
    eprintln!("  {:<24} {:>6.1} s", "total", total.as_secs_f64());

    // Loaded as the daemon loads it, the dump says what Kong will learn.
    let plugin = loader::load(&installed, &LoadOptions::default()).unwrap();
    assert_eq!(plugin.manifest.name, NAME);
    assert_eq!(plugin.manifest.version, "0.1.0");
    assert_eq!(plugin.manifest.priority, 1000);
    assert_eq!(plugin.manifest.phases, [Phase::Access]);
    let schema = &plugin.manifest.config_schema;
    // Developer notes stay in the code: only the fields' docs reach admins.
    assert!(schema.get("description").is_none(), "{schema}");
    let fields = schema["fields"].as_array().unwrap();
    let header = fields
        .iter()
        .find_map(|field| field.get("header"))
        .expect("a header field");
    assert_eq!(header["type"], "string");
    assert_eq!(header["default"], "x-api-key");
    assert_eq!(
        header["description"],
        "The request header every request must carry; requests without it get a 401."
    );
    assert!(fields.iter().any(|field| field.get("tag").is_some()));
}

/// The README's `toml` and `rust` blocks of "Write your own plugin", as one crate.
fn readme_crate(dir: &Path) {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let section = readme
        .split("## Write your own plugin")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has a \"Write your own plugin\" section");
    let (mut toml, mut rust) = (String::new(), String::new());
    let mut block: Option<&mut String> = None;
    for line in section.lines() {
        match (line, &mut block) {
            ("```toml", None) => block = Some(&mut toml),
            ("```rust", None) => block = Some(&mut rust),
            ("```", Some(_)) => block = None,
            (text, Some(out)) => {
                out.push_str(text);
                out.push('\n');
            }
            _ => {}
        }
    }
    assert!(toml.contains("[dependencies]") && rust.contains("impl Plugin"));
    // The README's paths are those of a plugin in this repository's plugins/.
    let pdk = workspace().join("plugin-abi");
    let toml = toml.replace("../../plugin-abi", pdk.to_str().unwrap());
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"readme-plugin\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\
             publish = false\n\n{toml}\n[workspace]\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), rust).unwrap();
    std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
}

#[test]
fn the_readme_plugin_and_its_tests_compile_and_pass_as_given() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("readme-plugin");
    readme_crate(&dir);
    let test = cargo(&dir, &["test"]);
    let stdout = String::from_utf8_lossy(&test.stdout);
    assert!(stdout.contains("tests::greets_the_host ... ok"), "{stdout}");
    assert!(
        stdout.contains("tests::a_request_without_host ... ok"),
        "{stdout}"
    );
}
