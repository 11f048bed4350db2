//! `docs/pdk.md`'s function tables are generated from `kong_versions::PDK_FUNCTIONS`, the
//! table the test kit checks phases with and the daemon checks Kong versions with. This
//! test fails when they differ; `UPDATE_PDK_DOC=1 cargo test -p kong-rust-pdk --test
//! pdk_doc` rewrites the generated part of the document. The ProtoBuf:1 column comes from
//! the protocol crate's method table, the one the daemon's `--protocol protobuf` gate uses.

use std::{fmt::Write, path::PathBuf};

use kong_rust_pdk::{
    Phase,
    kong_versions::{KongVersion, PDK_FUNCTIONS, PdkFunction},
};
use kong_rust_pluginserver_protocol::protobuf::transcode;

const BEGIN: &str = "<!-- generated from kong_versions::PDK_FUNCTIONS: begin -->";
const END: &str = "<!-- generated from kong_versions::PDK_FUNCTIONS: end -->";

fn short(phase: Phase) -> &'static str {
    match phase {
        Phase::Certificate => "cert",
        Phase::Rewrite => "rw",
        Phase::Access => "acc",
        Phase::Response => "resp",
        Phase::Preread => "pre",
        Phase::Log => "log",
    }
}

fn phases(list: &[Phase]) -> String {
    if list.is_empty() {
        "body_filter only".into()
    } else if list == Phase::ALL {
        "all".into()
    } else {
        list.iter().map(|p| short(*p)).collect::<Vec<_>>().join(" ")
    }
}

fn version(v: KongVersion) -> String {
    if v == KongVersion::HEAD {
        format!("{v}-dev")
    } else {
        v.to_string()
    }
}

/// `kong.service.request` → `kong.service().request()`.
fn accessor(group: &str) -> String {
    let parts: Vec<String> = group
        .split('.')
        .skip(1)
        .map(|part| format!("{part}()"))
        .collect();
    format!("kong.{}", parts.join("."))
}

fn row(function: &PdkFunction) -> String {
    let group = function.group();
    let tail = function
        .name
        .strip_prefix(group)
        .map(|t| t.trim_start_matches('.'))
        .filter(|t| !t.is_empty())
        .unwrap_or(function.name);
    let kong = format!("`{tail}({})`", function.params);
    let mut phase_text = phases(function.phases);
    if let Some((until, older)) = function.phases_before {
        phase_text = format!("{phase_text} ({} before {until})", phases(older));
    }
    let (rust, result) = match function.rust {
        Some(rust) => (rust.to_owned(), function.result.to_owned()),
        None => ("—".to_owned(), format!("not callable: {}", function.result)),
    };
    let protobuf = if transcode::is_carried(function.name) {
        "✓"
    } else {
        "✗"
    };
    format!(
        "| {kong} | {rust} | {result} | {phase_text} | {} | {protobuf} |",
        version(function.since)
    )
}

fn render() -> String {
    let mut out = String::new();
    let mut current = "";
    for function in PDK_FUNCTIONS {
        let group = function.group();
        if group != current {
            current = group;
            let _ = writeln!(out, "\n### {group} — `{}`\n", accessor(group));
            let _ = writeln!(
                out,
                "| Kong function | Rust method | result | phases | Kong | ProtoBuf:1 |"
            );
            let _ = writeln!(out, "|---|---|---|---|---|---|");
        }
        let _ = writeln!(out, "{}", row(function));
    }
    out
}

#[test]
fn docs_pdk_md_lists_every_function_as_the_table_does() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/pdk.md");
    let doc = std::fs::read_to_string(&path).expect("docs/pdk.md");
    let start = doc.find(BEGIN).expect("the begin marker") + BEGIN.len();
    let end = doc.find(END).expect("the end marker");
    let generated = format!("\n{}\n", render().trim());
    if doc[start..end] == generated {
        return;
    }
    if std::env::var_os("UPDATE_PDK_DOC").is_some() {
        let updated = format!("{}{generated}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, updated).expect("writing docs/pdk.md");
        return;
    }
    panic!(
        "docs/pdk.md's function tables differ from kong_versions::PDK_FUNCTIONS; run \
         UPDATE_PDK_DOC=1 cargo test -p kong-rust-pdk --test pdk_doc"
    );
}
