//! `plugin.StartInstance`, `plugin.CloseInstance`, `plugin.InstanceStatus`.

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use abi_stable::std_types::RStr;
use kong_rust_pdk::ffi::PluginErrorFfi;
use serde::Serialize;

use super::{MethodError, decode_error, id_argument};
use crate::{
    kong_config::{self, KongConfig},
    protocol::{encode, for_each_entry},
    state::{Daemon, Instance, PluginEntry, unix_now},
};

const START: &str = "plugin.StartInstance";

/// The InstanceStatus map Kong receives (it only reads `Id`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Status<'a> {
    id: u64,
    name: &'a str,
    config: serde_json::Value,
    start_time: u64,
}

fn write_status(out: &mut Vec<u8>, msgid: u64, instance: &Instance) {
    encode::ok_header(out, msgid);
    encode::value(out, &status_of(instance));
}

fn status_of(instance: &Instance) -> impl Serialize + '_ {
    Status {
        id: instance.id,
        name: &instance.plugin.plugin.info.name,
        // The plugin's own configuration (Kong never reads this field).
        config: serde_json::from_str(&instance.configured.config).unwrap_or_default(),
        start_time: instance.start_time,
    }
}

/// `[{"Name": plugin, "Config": "<json>"}]` → a new instance. The plugin is constructed
/// only if no live instance has the same configuration (Kong's bookkeeping keys aside).
pub fn start(
    daemon: &Daemon,
    msgid: u64,
    arg: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), MethodError> {
    let (mut name, mut config) = (None, None);
    for_each_entry(arg, |key, r| {
        match key {
            b"Name" => name = Some(r.bytes()?),
            b"Config" => config = Some(r.bytes()?),
            _ => {}
        }
        Ok(())
    })
    .map_err(decode_error(START))?;
    let name = name.ok_or_else(|| MethodError::bad_argument(START, "missing Name"))?;
    let name = String::from_utf8_lossy(name);
    let plugin = daemon
        .plugin(name.as_ref())
        .ok_or_else(|| MethodError::UnknownPlugin {
            name: name.to_string(),
            served: served(daemon),
        })?;
    let config: serde_json::Value = serde_json::from_slice(config.unwrap_or(b"{}"))
        .map_err(|e| MethodError::bad_argument(START, format!("Config is not JSON: {e}")))?;
    let KongConfig {
        canonical,
        mut meta,
    } = kong_config::split(&config).map_err(|e| MethodError::bad_argument(START, e))?;

    let config_error = |err: PluginErrorFfi| {
        if err.panicked {
            plugin.metrics.constructor_panics.inc();
        }
        MethodError::Config {
            plugin: name.to_string(),
            reason: err.message.into_string(),
        }
    };
    let configured = plugin
        .configured(&canonical, || {
            tracing::debug!(plugin = %name, "constructing for a new configuration");
            (plugin.plugin.module.new_instance())(RStr::from(canonical.as_str())).into_result()
        })
        .map_err(config_error)?;
    meta.id = daemon.ids.next();
    let meta_json = serde_json::to_string(&meta).expect("instance metadata is plain data");
    let handle = configured
        .handle
        .bind(RStr::from(meta_json.as_str()))
        .into_result()
        .map_err(config_error)?;
    let now = unix_now();
    let instance = Arc::new(Instance {
        id: meta.id,
        plugin: plugin.clone(),
        configured,
        start_time: now,
        last_used: AtomicU64::new(daemon.now_ms()),
        live_events: AtomicUsize::new(0),
        handle,
    });
    plugin.last_start_instance.store(now, Ordering::Relaxed);
    daemon.instances.insert(instance.id, instance.clone());
    tracing::debug!(plugin = %name, instance = instance.id, "started instance");
    write_status(out, msgid, &instance);
    Ok(())
}

/// `[id]` → the instance is released; its running events finish on their own.
pub fn close(
    daemon: &Daemon,
    msgid: u64,
    arg: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), MethodError> {
    let id = id_argument("plugin.CloseInstance", arg)?;
    let (_, instance) = daemon
        .instances
        .remove(&id)
        .ok_or(MethodError::NoInstance(id))?;
    instance
        .plugin
        .last_close_instance
        .store(unix_now(), Ordering::Relaxed);
    tracing::debug!(plugin = %instance.plugin.plugin.info.name, instance = id, "closed instance");
    write_status(out, msgid, &instance);
    Ok(())
}

/// `[id]` → the instance's status.
pub fn status(
    daemon: &Daemon,
    msgid: u64,
    arg: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), MethodError> {
    let id = id_argument("plugin.InstanceStatus", arg)?;
    let instance = daemon
        .instances
        .get(&id)
        .map(|entry| entry.value().clone())
        .ok_or(MethodError::NoInstance(id))?;
    write_status(out, msgid, &instance);
    Ok(())
}

/// The InstanceStatus maps of every instance of `plugin`, for GetStatus.
pub fn statuses_of(daemon: &Daemon, plugin: &Arc<PluginEntry>) -> Vec<serde_json::Value> {
    daemon
        .instances
        .iter()
        .filter(|entry| Arc::ptr_eq(&entry.plugin, plugin))
        .map(|entry| serde_json::to_value(status_of(entry.value())).unwrap_or_default())
        .collect()
}

/// The served plugin names, sorted, for error messages.
pub fn served(daemon: &Daemon) -> String {
    let plugins = daemon.plugins();
    let names: Vec<&str> = plugins
        .iter()
        .map(|p| p.plugin.info.name.as_str())
        .collect();
    if names.is_empty() {
        "(no plugins)".into()
    } else {
        names.join(", ")
    }
}
