//! `plugin.GetPluginInfo` and `plugin.GetStatus`: never called by Kong, used by tools.

use std::{collections::BTreeMap, sync::atomic::Ordering, time::UNIX_EPOCH};

use serde::Serialize;

use super::{MethodError, instance};
use crate::{
    dump::PluginDump,
    protocol::{decode::Reader, encode},
    state::Daemon,
};

/// `[name]` → the same object the dump prints for that plugin.
pub fn plugin_info(
    daemon: &Daemon,
    msgid: u64,
    arg: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), MethodError> {
    let name = Reader::new(arg)
        .bytes()
        .map_err(|e| MethodError::bad_argument("plugin.GetPluginInfo", e))?;
    let name = String::from_utf8_lossy(name);
    let entry = daemon
        .plugin(name.as_ref())
        .ok_or_else(|| MethodError::UnknownPlugin {
            name: name.to_string(),
            served: instance::served(daemon),
        })?;
    encode::ok_header(out, msgid);
    encode::value(out, &PluginDump::of(&entry.plugin.info));
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Status {
    pid: u32,
    live_events: usize,
    draining: bool,
    plugins: BTreeMap<String, PluginStatus>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PluginStatus {
    name: String,
    version: String,
    file: String,
    modtime: u64,
    load_time: u64,
    instances: Vec<serde_json::Value>,
    configurations: usize,
    last_start_instance: u64,
    last_close_instance: u64,
    events: u64,
    failures: u64,
    panics: u64,
    abandoned: u64,
}

/// `[any]` → `{"Pid", "Plugins": {name: {...}}}`.
pub fn status(daemon: &Daemon, msgid: u64, out: &mut Vec<u8>) -> Result<(), MethodError> {
    let secs = |t: std::time::SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let plugins = daemon
        .plugins()
        .into_iter()
        .map(|entry| {
            let plugin = &entry.plugin;
            let name = &plugin.info.name;
            let metrics = &entry.metrics;
            let status = PluginStatus {
                name: name.clone(),
                version: plugin.info.version.clone(),
                file: plugin.path.display().to_string(),
                modtime: secs(plugin.modified),
                load_time: secs(plugin.loaded),
                instances: instance::statuses_of(daemon, &entry),
                configurations: entry.configurations(),
                last_start_instance: entry.last_start_instance.load(Ordering::Relaxed),
                last_close_instance: entry.last_close_instance.load(Ordering::Relaxed),
                events: metrics.events(),
                failures: metrics.failures(),
                panics: metrics.panics(),
                abandoned: metrics.abandoned(),
            };
            (name.clone(), status)
        })
        .collect();
    encode::ok_header(out, msgid);
    encode::value(
        out,
        &Status {
            pid: daemon.pid,
            live_events: daemon.live_events.load(Ordering::Relaxed),
            draining: daemon.draining.load(Ordering::Relaxed),
            plugins,
        },
    );
    Ok(())
}
