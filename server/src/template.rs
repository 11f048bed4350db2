//! `kong-rust-pluginserver new NAME`: a new plugin crate, ready to build and test.
//!
//! The crate's files are the templates under `server/templates/plugin/`, with placeholders
//! (`{{name}}`, `{{crate_ident}}`, `{{type_name}}`, `{{pdk_dependency}}`,
//! `{{pdk_dev_dependency}}`) filled in by [`render`]. [`create`] writes them to a new
//! directory. The crate has its own `[workspace]` table, so it builds on its own wherever it
//! is created.
//!
//! By default the crate gets kong-rust-pdk from the sources built into this binary
//! ([`PdkSource::Bundled`], see `server/build.rs`): [`create`] writes them to
//! `vendor/kong-rust-pdk/` in the crate, with this workspace's Cargo.lock, so the plugin
//! builds with no checkout and no registry release, against exactly the PDK (and ABI) of
//! the daemon that created it.

use std::path::{Path, PathBuf};

use crate::loader::is_valid_name;

/// Sources built into the binary: kong-rust-pdk and the crates it needs, with standalone
/// manifests (see `server/build.rs`).
#[derive(Debug)]
pub struct Bundle {
    /// kong-rust-pdk's version.
    pub version: &'static str,
    /// The workspace's Cargo.lock: the dependency versions the daemon was tested with.
    pub lock: Option<&'static str>,
    /// Every file, by path relative to kong-rust-pdk's directory.
    pub files: &'static [(&'static str, &'static [u8])],
}

include!(concat!(env!("OUT_DIR"), "/bundled_pdk.rs"));

/// Where the bundled PDK goes, relative to the crate.
pub const VENDOR_DIR: &str = "vendor/kong-rust-pdk";

/// Where the created crate gets `kong-rust-pdk` from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PdkSource {
    /// The sources built into this binary, written to [`VENDOR_DIR`] in the crate.
    Bundled,
    /// A crates.io version requirement, e.g. `"0.1"`.
    Version(String),
    /// A local checkout of the crate: the `plugin-abi` directory of this repository.
    Path(PathBuf),
}

impl PdkSource {
    /// The published release this daemon speaks to: `major.minor` of its own version
    /// (plugins built against any release of it load).
    pub fn published() -> PdkSource {
        let version = env!("CARGO_PKG_VERSION");
        let major_minor: Vec<&str> = version.split('.').take(2).collect();
        PdkSource::Version(major_minor.join("."))
    }

    /// The bundled sources when this binary has them (built from the workspace).
    pub fn bundled() -> Result<PdkSource, TemplateError> {
        match BUNDLED_PDK {
            Some(_) => Ok(PdkSource::Bundled),
            None => Err(TemplateError::NotBundled),
        }
    }
}

/// Why a crate could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// Kong would not accept the plugin name.
    #[error("invalid plugin name {0:?}: use {rule}", rule = crate::loader::NAME_RULE)]
    InvalidName(String),
    /// A valid plugin name that cargo refuses as a package name.
    #[error("{name:?} cannot be a cargo package name: {reason}")]
    NotACrateName {
        /// The name.
        name: String,
        /// Why cargo refuses it.
        reason: &'static str,
    },
    /// The target directory is already there; nothing is overwritten.
    #[error("{0} already exists; choose another name or --path")]
    Exists(PathBuf),
    /// The local `kong-rust-pdk` checkout is not usable.
    #[error("{path}: not a kong-rust-pdk checkout (the plugin-abi directory): {reason}")]
    PdkPath {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The binary carries no PDK sources (it was not built from the workspace).
    #[error(
        "this kong-rust-pluginserver was built without the kong-rust-pdk sources; pass \
         --pdk-path DIR (the plugin-abi directory of a kong-rust-pluginserver checkout) or \
         --pdk-registry"
    )]
    NotBundled,
    /// A file or directory could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One file of the crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// The path relative to the crate directory.
    pub path: String,
    /// The content.
    pub content: String,
}

/// A crate [`create`] wrote.
#[derive(Debug, Clone)]
pub struct Created {
    /// The crate directory.
    pub dir: PathBuf,
    /// The plugin name (also the package name).
    pub name: String,
    /// The library `cargo build` makes, e.g. `libmy_plugin.so` (in `target/<profile>/`).
    pub library: String,
    /// The files written, relative to `dir` (the bundled PDK's as one entry, its directory).
    pub files: Vec<String>,
}

impl Created {
    /// What to tell the user: where the crate is and how to test, build and install it.
    pub fn next_steps(&self) -> String {
        let dir = self.dir.display();
        format!(
            "Created the plugin crate `{name}` in {dir}\n\
             \n\
             \x20 cd {dir}\n\
             \x20 cargo test               # unit tests against a simulated Kong\n\
             \x20 cargo build --release    # makes target/release/{library}\n\
             \n\
             Install target/release/{library} into the plugins directory and print the\n\
             kong.conf lines with `kong-rust-pluginserver kong-conf` (see {dir}/README.md).\n",
            name = self.name,
            library = self.library,
        )
    }
}

const CARGO_TOML: &str = include_str!("../templates/plugin/Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("../templates/plugin/lib.rs.tmpl");
const README_MD: &str = include_str!("../templates/plugin/README.md.tmpl");
const GITIGNORE: &str = include_str!("../templates/plugin/gitignore.tmpl");

/// The files of a plugin crate named `name`, in memory.
pub fn render(name: &str, pdk: &PdkSource) -> Result<Vec<File>, TemplateError> {
    check_name(name)?;
    let (dependency, dev_dependency) = pdk_dependencies(pdk)?;
    let crate_ident = name.replace('-', "_");
    let type_name = type_name(name);
    let fill = |template: &str| {
        template
            .replace("{{pdk_dependency}}", &dependency)
            .replace("{{pdk_dev_dependency}}", &dev_dependency)
            .replace("{{crate_ident}}", &crate_ident)
            .replace("{{type_name}}", &type_name)
            .replace("{{name}}", name)
    };
    let mut files: Vec<File> = [
        ("Cargo.toml", CARGO_TOML),
        ("src/lib.rs", LIB_RS),
        ("README.md", README_MD),
        (".gitignore", GITIGNORE),
    ]
    .into_iter()
    .map(|(path, template)| File {
        path: path.to_owned(),
        content: fill(template),
    })
    .collect();
    // The versions the daemon was built and tested with, as the starting point of the
    // crate's resolution (cargo drops what the crate does not use).
    if let (PdkSource::Bundled | PdkSource::Path(_), Some(lock)) =
        (pdk, BUNDLED_PDK.as_ref().and_then(|b| b.lock))
    {
        files.push(File {
            path: "Cargo.lock".to_owned(),
            content: lock.to_owned(),
        });
    }
    Ok(files)
}

/// Creates the crate of plugin `name` in the new directory `dir` (its parents are created
/// as needed). Refuses a `dir` that already exists.
pub fn create(dir: &Path, name: &str, pdk: PdkSource) -> Result<Created, TemplateError> {
    let files = render(name, &pdk)?;
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| TemplateError::Io { path, source }
    };
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    // create_dir, not create_dir_all: it fails on an existing directory, atomically.
    match std::fs::create_dir(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(TemplateError::Exists(dir.to_owned()));
        }
        result => result.map_err(io_error(dir))?,
    }
    let write = |path: &Path, content: &[u8]| {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        std::fs::write(path, content).map_err(io_error(path))
    };
    for file in &files {
        write(&dir.join(&file.path), file.content.as_bytes())?;
    }
    let mut written: Vec<String> = files.into_iter().map(|f| f.path).collect();
    if pdk == PdkSource::Bundled {
        let bundle = BUNDLED_PDK.as_ref().ok_or(TemplateError::NotBundled)?;
        let vendor = dir.join(VENDOR_DIR);
        for (path, content) in bundle.files {
            write(&vendor.join(path), content)?;
        }
        write(
            &dir.join("vendor/README.md"),
            vendor_readme(bundle).as_bytes(),
        )?;
        written.push(VENDOR_DIR.to_owned());
        written.push("vendor/README.md".to_owned());
    }
    Ok(Created {
        dir: dir.to_owned(),
        name: name.to_owned(),
        library: format!("lib{}.so", name.replace('-', "_")),
        files: written,
    })
}

/// What `vendor/` is, for whoever finds it in the crate.
fn vendor_readme(bundle: &Bundle) -> String {
    format!(
        "# Bundled kong-rust-pdk\n\n\
         `kong-rust-pdk/` holds kong-rust-pdk {version} (with kong-rust-plugin-abi, its macros\n\
         and its test kit), the sources `kong-rust-pluginserver {daemon} new` was built with:\n\
         a plugin built against them loads in that daemon (the plugin ABI matches).\n\n\
         Do not edit them. To move to another release, create a crate with that release's\n\
         `kong-rust-pluginserver new` and copy its `vendor/` here, or switch the\n\
         dependencies in Cargo.toml to a checkout (`path = \"../kong-rust-pluginserver/plugin-abi\"`)\n\
         or to the crates.io release once published.\n",
        version = bundle.version,
        daemon = env!("CARGO_PKG_VERSION"),
    )
}

fn check_name(name: &str) -> Result<(), TemplateError> {
    if !is_valid_name(name) {
        return Err(TemplateError::InvalidName(name.to_owned()));
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(TemplateError::NotACrateName {
            name: name.to_owned(),
            reason: "it starts with a digit (a plugin of that name needs a package named otherwise and `const NAME` set in its impl)",
        });
    }
    Ok(())
}

/// The `[dependencies]` line for kong-rust-pdk and the `[dev-dependencies]` line for its
/// test kit.
fn pdk_dependencies(pdk: &PdkSource) -> Result<(String, String), TemplateError> {
    let (source, testkit) = match pdk {
        PdkSource::Bundled => (
            format!("path = {}", toml_string(VENDOR_DIR)),
            format!("path = {}", toml_string(&format!("{VENDOR_DIR}/testkit"))),
        ),
        PdkSource::Version(version) => {
            let version = format!("version = {}", toml_string(version));
            (version.clone(), version)
        }
        PdkSource::Path(path) => {
            let pdk_error = |reason: String| TemplateError::PdkPath {
                path: path.clone(),
                reason,
            };
            // Absolute: a relative path in Cargo.toml is relative to the new crate.
            let absolute = std::fs::canonicalize(path).map_err(|e| pdk_error(e.to_string()))?;
            let manifest = std::fs::read_to_string(absolute.join("Cargo.toml"))
                .map_err(|e| pdk_error(format!("reading its Cargo.toml: {e}")))?;
            if !manifest
                .lines()
                .any(|line| line.trim() == r#"name = "kong-rust-pdk""#)
            {
                return Err(pdk_error("its Cargo.toml is not kong-rust-pdk's".into()));
            }
            let text = absolute
                .to_str()
                .ok_or_else(|| pdk_error("the path is not UTF-8".into()))?;
            let testkit = absolute.join("testkit");
            let testkit = testkit
                .to_str()
                .ok_or_else(|| pdk_error("the path is not UTF-8".into()))?;
            (
                format!("path = {}", toml_string(text)),
                format!("path = {}", toml_string(testkit)),
            )
        }
    };
    Ok((
        format!("kong-rust-pdk = {{ {source} }}"),
        format!("kong-rust-pdk-testkit = {{ {testkit} }}"),
    ))
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The plugin's type: the name in CamelCase, ending in `Plugin` (so it never collides with
/// `Config`, `Kong` or the `Plugin` trait).
fn type_name(name: &str) -> String {
    let mut camel: String = name
        .split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase());
            first.into_iter().chain(chars).collect::<String>()
        })
        .collect();
    if !(camel.ends_with("Plugin") && camel.len() > "Plugin".len()) {
        camel.push_str("Plugin");
    }
    camel
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_pdk() -> PdkSource {
        PdkSource::Path(Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-abi"))
    }

    #[test]
    fn every_placeholder_is_filled() {
        for pdk in [PdkSource::published(), repo_pdk()] {
            for file in render("my-auth_2", &pdk).unwrap() {
                assert!(!file.content.contains("{{"), "{}", file.path);
                assert!(!file.content.contains("}}"), "{}", file.path);
            }
        }
    }

    #[test]
    fn names_and_types() {
        let files = render("my-auth", &PdkSource::published()).unwrap();
        let cargo = &files[0].content;
        assert!(cargo.contains("name = \"my-auth\""), "{cargo}");
        assert!(cargo.contains("\n[workspace]\n"), "{cargo}");
        assert!(files[1].content.contains("impl Plugin for MyAuthPlugin {"));
        assert!(files[2].content.contains("target/release/libmy_auth.so"));
        assert_eq!(type_name("rate_limit"), "RateLimitPlugin");
        assert_eq!(type_name("my-plugin"), "MyPlugin");
        assert_eq!(type_name("plugin"), "PluginPlugin");
        assert_eq!(type_name("config"), "ConfigPlugin");
        assert_eq!(type_name("a-_b"), "ABPlugin");
    }

    #[test]
    fn the_published_source_is_a_version_requirement() {
        let version = env!("CARGO_PKG_VERSION");
        let PdkSource::Version(requirement) = PdkSource::published() else {
            panic!("not a version");
        };
        assert!(
            version.starts_with(&format!("{requirement}.")),
            "{requirement}"
        );
        let files = render("x", &PdkSource::Version("0.1".into())).unwrap();
        let cargo = &files[0].content;
        assert!(
            cargo.contains("kong-rust-pdk = { version = \"0.1\" }\n"),
            "{cargo}"
        );
        assert!(
            cargo.contains("kong-rust-pdk-testkit = { version = \"0.1\" }\n"),
            "{cargo}"
        );
    }

    #[test]
    fn a_local_pdk_is_referenced_by_absolute_path() {
        let files = render("x", &repo_pdk()).unwrap();
        let abs =
            std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-abi"))
                .unwrap();
        let expected = format!(
            "kong-rust-pdk = {{ path = {} }}\n",
            toml_string(abs.to_str().unwrap())
        );
        assert!(files[0].content.contains(&expected), "{}", files[0].content);

        let err = render("x", &PdkSource::Path(env!("CARGO_MANIFEST_DIR").into())).unwrap_err();
        assert!(matches!(err, TemplateError::PdkPath { .. }), "{err}");
        let err = render("x", &PdkSource::Path("/nonexistent/plugin-abi".into())).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/plugin-abi"), "{err}");
    }

    #[test]
    fn names_kong_or_cargo_refuse_are_refused() {
        for bad in ["", "My-Plugin", "-x", "../x", "a b", &"x".repeat(65)] {
            let err = render(bad, &PdkSource::published()).unwrap_err();
            assert!(
                matches!(err, TemplateError::InvalidName(_)),
                "{bad:?}: {err}"
            );
        }
        let err = render("2fa", &PdkSource::published()).unwrap_err();
        assert!(matches!(err, TemplateError::NotACrateName { .. }), "{err}");
    }

    #[test]
    fn create_writes_the_files_and_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested/my-plugin");
        let created = create(&dir, "my-plugin", PdkSource::published()).unwrap();
        assert_eq!(created.library, "libmy_plugin.so");
        for file in ["Cargo.toml", "src/lib.rs", "README.md", ".gitignore"] {
            assert!(dir.join(file).is_file(), "{file}");
            assert!(created.files.iter().any(|f| f == file), "{file}");
        }
        assert!(
            created
                .next_steps()
                .contains("target/release/libmy_plugin.so")
        );

        std::fs::write(dir.join("src/lib.rs"), "mine").unwrap();
        let err = create(&dir, "my-plugin", PdkSource::published()).unwrap_err();
        assert!(matches!(err, TemplateError::Exists(_)), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.join("src/lib.rs")).unwrap(),
            "mine"
        );

        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = create(&empty, "x", PdkSource::published()).unwrap_err();
        assert!(matches!(err, TemplateError::Exists(_)), "{err}");
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    }

    #[test]
    fn the_bundled_pdk_is_written_into_the_crate_with_standalone_manifests() {
        let bundle = BUNDLED_PDK.as_ref().expect("built from the workspace");
        assert_eq!(bundle.version, env!("CARGO_PKG_VERSION"));
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bundled");
        let created = create(&dir, "bundled", PdkSource::bundled().unwrap()).unwrap();
        assert!(created.files.iter().any(|f| f == "Cargo.lock"));
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(
            cargo.contains("kong-rust-pdk = { path = \"vendor/kong-rust-pdk\" }\n"),
            "{cargo}"
        );
        assert!(
            cargo.contains("kong-rust-pdk-testkit = { path = \"vendor/kong-rust-pdk/testkit\" }\n"),
            "{cargo}"
        );
        let vendor = dir.join(VENDOR_DIR);
        for krate in ["", "abi/", "macros/", "testkit/"] {
            let manifest = std::fs::read_to_string(vendor.join(format!("{krate}Cargo.toml")))
                .unwrap_or_else(|e| panic!("{krate}Cargo.toml: {e}"));
            assert!(!manifest.contains("workspace"), "{krate}: {manifest}");
            assert!(
                !manifest.contains("dev-dependencies"),
                "{krate}: {manifest}"
            );
            assert!(
                vendor.join(format!("{krate}src/lib.rs")).is_file(),
                "{krate}"
            );
        }
        let pdk: toml::Table = std::fs::read_to_string(vendor.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(pdk["package"]["version"].as_str(), Some(bundle.version));
        assert_eq!(
            pdk["dependencies"]["kong-rust-plugin-abi"]["path"].as_str(),
            Some("abi")
        );
        assert_eq!(pdk["lints"]["rust"]["missing_docs"].as_str(), Some("warn"));
        let testkit: toml::Table = std::fs::read_to_string(vendor.join("testkit/Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            testkit["dependencies"]["kong-rust-pdk"]["path"].as_str(),
            Some("..")
        );
        // The very sources this binary was built from.
        let lib = std::fs::read(vendor.join("src/lib.rs")).unwrap();
        assert_eq!(lib, include_bytes!("../../plugin-abi/src/lib.rs"));
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("a\nb"), r#""a\u000Ab""#);
    }
}
