//! Kong's answers for the client, ctx, nginx, ip, node, cluster, plugin and vault groups.

use super::{
    Answer, HOSTNAME, NODE_ID, PLUGIN_ID, START_TIME, arg, arg_str, entity, nil, s, unknown, val,
};
use kong_rust_pdk::{Phase, Value};

use crate::{TestRequest, record::Recorded};

/// Kong's answer to `method(args)`; a function of the group the kit does not model is
/// recorded as unknown and answered nil.
pub(super) fn answer(
    req: &TestRequest,
    rec: &mut Recorded,
    phase: Phase,
    method: &str,
    args: &[Value],
) -> Answer {
    match method {
        // kong.client
        "kong.client.get_ip" => s(&req.client_ip),
        "kong.client.get_forwarded_ip" => s(req.forwarded_ip.as_ref().unwrap_or(&req.client_ip)),
        "kong.client.get_port" | "kong.client.get_forwarded_port" => {
            val(u32::from(req.client_port))
        }
        "kong.client.get_credential" => match &rec.authenticated {
            Some((_, credential)) => Ok(credential.clone()),
            None => entity(req.credential.as_ref()),
        },
        "kong.client.get_consumer" => match &rec.authenticated {
            Some((consumer, _)) => Ok(consumer.clone()),
            None => entity(req.consumer.as_ref()),
        },
        "kong.client.load_consumer" => {
            let key = arg_str(method, args, 0)?;
            let by_username = arg(args, 1).and_then(Value::as_bool).unwrap_or(false);
            entity(
                req.consumer
                    .as_ref()
                    .filter(|c| c.id == key || (by_username && c.username.as_deref() == Some(key))),
            )
        }
        "kong.client.authenticate" => {
            let (consumer, credential) = (arg(args, 0).cloned(), arg(args, 1).cloned());
            if consumer.is_none() && credential.is_none() {
                return Err(
                    "kong.client.authenticate: either credential or consumer must be provided"
                        .into(),
                );
            }
            rec.authenticated = Some((consumer, credential));
            nil()
        }
        "kong.client.get_protocol" => s(if phase == Phase::Preread {
            "tcp"
        } else if req.scheme == "https" {
            "https"
        } else {
            "http"
        }),
        "kong.client.tls.request_client_certificate" | "kong.client.tls.disable_session_reuse" => {
            rec.tls_actions
                .push(method.trim_start_matches("kong.client.tls.").to_owned());
            val(true)
        }
        "kong.client.tls.get_full_client_certificate_chain" => nil(),
        "kong.client.tls.set_client_verify" => {
            let v = arg_str(method, args, 0)?;
            rec.tls_actions.push(format!("set_client_verify:{v}"));
            nil()
        }

        // kong.ctx.shared, kong.nginx
        "kong.ctx.shared.get" => Ok(rec.ctx_shared.get(arg_str(method, args, 0)?).cloned()),
        "kong.ctx.shared.set" => {
            let key = arg_str(method, args, 0)?.to_owned();
            match arg(args, 1) {
                Some(v) => rec.ctx_shared.insert(key, v.clone()),
                None => rec.ctx_shared.remove(&key),
            };
            nil()
        }
        "kong.nginx.get_ctx" => Ok(rec.nginx_ctx.get(arg_str(method, args, 0)?).cloned()),
        "kong.nginx.set_ctx" => {
            let key = arg_str(method, args, 0)?.to_owned();
            match arg(args, 1) {
                Some(v) => rec.nginx_ctx.insert(key, v.clone()),
                None => rec.nginx_ctx.remove(&key),
            };
            nil()
        }
        "kong.nginx.get_var" => Ok(req
            .nginx_vars
            .get(arg_str(method, args, 0)?)
            .map(|v| Value::from(v.as_str()))),
        "kong.nginx.get_tls1_version_str" => Ok((req.scheme == "https").then(|| "TLSv1.3".into())),
        "kong.nginx.req_start_time" => val(START_TIME),
        "kong.nginx.get_subsystem" => s(if phase == Phase::Preread {
            "stream"
        } else {
            "http"
        }),
        "kong.nginx.get_statistics" => val(Value::map([
            ("connections_active", Value::Int(1)),
            ("connections_reading", Value::Int(0)),
            ("connections_writing", Value::Int(1)),
            ("connections_waiting", Value::Int(0)),
            ("connections_accepted", Value::Int(1)),
            ("connections_handled", Value::Int(1)),
            ("total_requests", Value::Int(1)),
        ])),

        // kong.ip, kong.node, kong.cluster, kong.plugin, kong.vault
        "kong.ip.is_trusted" => val(req
            .trusted_ips
            .iter()
            .any(|ip| ip == arg_str(method, args, 0).unwrap_or(""))),
        "kong.node.get_id" => s(NODE_ID),
        "kong.node.get_hostname" => s(HOSTNAME),
        "kong.node.get_memory_stats" => {
            let size = |bytes: i64| match arg(args, 0).and_then(Value::as_str) {
                Some(unit) if unit != "b" => Value::from(
                    format!("{:.1} KiB", bytes as f64 / 1024.0)
                        .replace("KiB", &format!("{}iB", unit.to_uppercase())),
                ),
                _ => Value::Int(bytes),
            };
            val(Value::map([
                (
                    "lua_shared_dicts",
                    Value::map([(
                        "kong",
                        Value::map([
                            ("capacity", size(5_242_880)),
                            ("allocated_slabs", size(12_288)),
                        ]),
                    )]),
                ),
                (
                    "workers_lua_vms",
                    Value::Array(vec![Value::map([
                        ("pid", Value::Int(i64::from(std::process::id()))),
                        ("http_allocated_gc", size(1_048_576)),
                    ])]),
                ),
            ]))
        }
        "kong.cluster.get_id" => nil(),
        "kong.plugin.get_id" => s(PLUGIN_ID),
        "kong.vault.get" => Ok(req
            .vault
            .get(arg_str(method, args, 0)?)
            .map(|v| Value::from(v.as_str()))),
        "kong.vault.is_reference" => val(arg_str(method, args, 0)?.starts_with("{vault://")),
        "kong.vault.parse_reference" => Ok(parse_reference(arg_str(method, args, 0)?)),
        "kong.vault.flush" | "kong.vault.warmup" => nil(),
        "kong.vault.update" => {
            let options = arg(args, 0)
                .cloned()
                .ok_or("kong.vault.update: options must be a table")?;
            Ok(Some(update_secrets(req, options)))
        }

        _ => unknown(rec, method),
    }
}

/// `kong.vault.update`: every key named in `$refs` gets the secret its reference resolves
/// to (left as is when the test described no such secret).
fn update_secrets(req: &TestRequest, options: Value) -> Value {
    let Value::Map(mut entries) = options else {
        return options;
    };
    let refs: Vec<(String, String)> = entries
        .iter()
        .find(|(k, _)| k.as_str() == Some("$refs"))
        .and_then(|(_, refs)| refs.as_map())
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
        .collect();
    for (key, reference) in refs {
        let Some(secret) = req.vault.get(&reference) else {
            continue;
        };
        let secret = Value::from(secret.as_str());
        match entries.iter_mut().find(|(k, _)| k.as_str() == Some(&key)) {
            Some((_, value)) => *value = secret,
            None => entries.push((Value::from(key), secret)),
        }
    }
    Value::Map(entries)
}

fn parse_reference(reference: &str) -> Option<Value> {
    let inner = reference.strip_prefix("{vault://")?.strip_suffix('}')?;
    let (name, rest) = inner.split_once('/')?;
    let (path, version) = match rest.split_once('#') {
        Some((p, v)) => (p, v.parse::<i64>().ok()),
        None => (rest, None),
    };
    let (resource, key) = match path.split_once('/') {
        Some((r, k)) => (r, Some(k)),
        None => (path, None),
    };
    let mut entries = vec![
        ("name", Value::from(name)),
        ("resource", Value::from(resource)),
    ];
    if let Some(key) = key {
        entries.push(("key", Value::from(key)));
    }
    if let Some(version) = version {
        entries.push(("version", Value::Int(version)));
    }
    Some(Value::map(entries))
}
