//! Kong's answers for `kong.log.set_serialize_value` and `kong.log.serialize`.

use super::{Answer, arg, arg_str, nil, s, unknown};
use super::{START_TIME, lua_text};
use kong_rust_pdk::types::Multimap;
use kong_rust_pdk::{Phase, Value};

use crate::{
    TestRequest,
    record::{Recorded, TelemetryLog},
};

/// Kong's answer to `method(args)`; a function of the group the kit does not model is
/// recorded as unknown and answered nil.
pub(super) fn answer(
    req: &TestRequest,
    rec: &mut Recorded,
    _phase: Phase,
    method: &str,
    args: &[Value],
) -> Answer {
    match method {
        // kong.log
        "kong.log.set_serialize_value" => {
            let key = arg_str(method, args, 0)?.to_owned();
            let value = arg(args, 1).cloned().unwrap_or_default();
            let mode = arg(args, 2)
                .and_then(|o| o.get("mode"))
                .and_then(Value::as_str)
                .unwrap_or("set");
            let present = rec.serialize_values.contains_key(&key);
            if mode == "set" || (mode == "add" && !present) || (mode == "replace" && present) {
                rec.serialize_values.insert(key, value);
            }
            nil()
        }
        "kong.log.serialize" => s(serialize(req, rec).to_string()),
        "kong.log.set_format" => nil(),

        // kong.telemetry
        "kong.telemetry.log" => {
            let text = |i| arg(args, i).and_then(Value::as_str).map(str::to_owned);
            let plugin_name = text(0).ok_or("kong.telemetry.log: plugin_name must be a string")?;
            if arg(args, 1).and_then(Value::as_map).is_none() {
                return Err("kong.telemetry.log: plugin_config must be a table".into());
            }
            let message_type =
                text(2).ok_or("kong.telemetry.log: message_type must be a string")?;
            rec.telemetry_logs.push(TelemetryLog {
                plugin_name,
                message_type,
                message: text(3).filter(|m| !m.is_empty()),
                attributes: arg(args, 4).cloned(),
            });
            Ok(Some(Value::Bool(true)))
        }

        _ => unknown(rec, method),
    }
}

/// A [`Value`] as JSON (maps with non-string keys use their text).
pub(super) fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => J::from(*f),
        Value::Str(s) => J::from(s.as_str()),
        Value::Bytes(b) => J::from(String::from_utf8_lossy(b).into_owned()),
        Value::Array(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (lua_text(k), to_json(v)))
                .collect(),
        ),
    }
}

/// The summary `kong.log.serialize` reports, built from the request and what the
/// plugin did, including `set_serialize_value` keys (dotted keys nest).
fn serialize(req: &TestRequest, rec: &Recorded) -> serde_json::Value {
    let headers = |m: &Multimap| {
        serde_json::Value::Object(
            m.iter()
                .map(|(k, vs)| {
                    let v = match vs {
                        [one] => serde_json::Value::from(one.as_str()),
                        many => serde_json::Value::from(many.to_vec()),
                    };
                    (k.to_owned(), v)
                })
                .collect(),
        )
    };
    let mut querystring = serde_json::Map::new();
    for (k, v) in &req.query {
        querystring.insert(
            k.clone(),
            v.as_ref()
                .map_or(serde_json::Value::Bool(true), |v| v.as_str().into()),
        );
    }
    let url = format!(
        "{}://{}:{}{}",
        req.scheme,
        req.host.clone().unwrap_or_else(|| req
            .headers
            .get("host")
            .unwrap_or("localhost")
            .to_owned()),
        req.port,
        req.path
    );
    let mut out = serde_json::json!({
        "request": {
            "method": req.method,
            "uri": req.path,
            "url": url,
            "headers": headers(&req.headers),
            "querystring": querystring,
            "size": req.body.len(),
        },
        "response": {
            "status": rec.response.status,
            "headers": headers(&rec.response.headers),
            "size": rec.response.body.len(),
        },
        "client_ip": req.forwarded_ip.clone().unwrap_or_else(|| req.client_ip.clone()),
        "started_at": (START_TIME * 1000.0) as i64,
    });
    let add = |out: &mut serde_json::Value, key: &str, v: serde_json::Value| {
        out.as_object_mut().unwrap().insert(key.to_owned(), v);
    };
    if let Some(route) = &req.route {
        add(
            &mut out,
            "route",
            serde_json::to_value(route).unwrap_or_default(),
        );
    }
    if let Some(service) = &req.service {
        add(
            &mut out,
            "service",
            serde_json::to_value(service).unwrap_or_default(),
        );
    }
    if let Some(consumer) = &req.consumer {
        add(
            &mut out,
            "consumer",
            serde_json::to_value(consumer).unwrap_or_default(),
        );
    }
    for (key, value) in &rec.serialize_values {
        let mut node = &mut out;
        let parts: Vec<&str> = key.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            let obj = node.as_object_mut().unwrap();
            node = obj
                .entry(part.to_string())
                .or_insert_with(|| serde_json::json!({}));
            if !node.is_object() {
                *node = serde_json::json!({});
            }
        }
        node.as_object_mut()
            .unwrap()
            .insert(parts[parts.len() - 1].to_owned(), to_json(value));
    }
    out
}
