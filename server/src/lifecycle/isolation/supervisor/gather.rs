//! Asking every worker for its status or metrics, and putting the answers together.
//!
//! A worker answers on its control thread, not on its event loops, so even a worker whose
//! loop is held by a stuck handler answers; one that does not answer within the timeout is
//! left out (and shown as such).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use serde_json::{Map, Value};

use super::pool::Worker;
use crate::lifecycle::isolation::messages::Down;

/// How long a worker may take to answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Where an answer goes: the asker's channel, with the worker's index among those asked.
type Waiting = (usize, mpsc::Sender<(usize, Vec<u8>)>);

/// Questions sent to workers, waiting for their answers.
#[derive(Default)]
pub struct Queries {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiting>>,
}

impl Queries {
    /// Asks each of `workers` (`ask` makes the question from its id) and collects the
    /// answers that come within [`ANSWER_TIMEOUT`], by worker index.
    pub fn ask(&self, workers: &[Arc<Worker>], ask: impl Fn(u64) -> Down) -> Vec<Option<Vec<u8>>> {
        let (answers, answered) = mpsc::channel();
        let mut ids = Vec::new();
        for (index, worker) in workers.iter().enumerate() {
            let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
            self.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, (index, answers.clone()));
            ids.push(id);
            if worker.send(&ask(id), None, &[]).is_err() {
                self.waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            }
        }
        drop(answers);
        let mut results = vec![None; workers.len()];
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut missing = workers.len();
        while missing > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match answered.recv_timeout(left) {
                Ok((index, bytes)) => {
                    if results[index].is_none() {
                        missing -= 1;
                    }
                    results[index] = Some(bytes);
                }
                Err(_) => break,
            }
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            waiting.remove(&id);
        }
        results
    }

    /// A worker's answer to question `id`.
    pub fn answered(&self, id: u64, bytes: Vec<u8>) {
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some((index, answers)) = waiting {
            let _ = answers.send((index, bytes));
        }
    }
}

/// Adds one worker's plugin statuses into `plugins`: counters add up (a plugin served by
/// its own worker and by the worker of the socket of every plugin), instance lists join.
pub fn merge_plugins(plugins: &mut BTreeMap<String, Value>, worker: &Value) {
    let Some(theirs) = worker.get("Plugins").and_then(Value::as_object) else {
        return;
    };
    for (name, status) in theirs {
        match plugins.get_mut(name) {
            None => {
                plugins.insert(name.clone(), status.clone());
            }
            Some(ours) => merge_plugin(ours, status),
        }
    }
}

fn merge_plugin(ours: &mut Value, theirs: &Value) {
    let (Some(ours), Some(theirs)) = (ours.as_object_mut(), theirs.as_object()) else {
        return;
    };
    for (key, value) in theirs {
        match (ours.get_mut(key), value) {
            (None, _) => {
                ours.insert(key.clone(), value.clone());
            }
            (Some(Value::Array(mine)), Value::Array(more)) => mine.extend(more.iter().cloned()),
            (Some(Value::Number(mine)), Value::Number(more)) => {
                let (a, b) = (mine.as_u64().unwrap_or(0), more.as_u64().unwrap_or(0));
                // Times are latest-wins; everything else counts.
                let merged = if key.starts_with("Last") || key.ends_with("Time") {
                    a.max(b)
                } else {
                    a + b
                };
                *mine = merged.into();
            }
            _ => {}
        }
    }
}

/// An object from pairs, in order.
pub fn object(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<Map<String, Value>>(),
    )
}

/// Joins Prometheus text expositions: each family's HELP and TYPE once, samples of the
/// same series added up (`*_info` series keep the largest value), in order of appearance.
pub fn merge_metrics(texts: &[String]) -> String {
    struct Family {
        help: Option<String>,
        kind: Option<String>,
        samples: Vec<(String, f64)>,
        index: HashMap<String, usize>,
    }
    let mut order: Vec<String> = Vec::new();
    let mut families: HashMap<String, Family> = HashMap::new();
    let mut declared: HashMap<String, String> = HashMap::new();
    let mut entries: Vec<(String, Line)> = Vec::new();
    enum Line {
        Help(String),
        Type(String),
        Sample(String, f64),
    }
    for text in texts {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default().to_owned();
                entries.push((name, Line::Help(line.to_owned())));
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let name = parts.next().unwrap_or_default().to_owned();
                declared.insert(name.clone(), parts.next().unwrap_or_default().to_owned());
                entries.push((name, Line::Type(line.to_owned())));
            } else if !line.is_empty() && !line.starts_with('#') {
                let Some(split) = line.rfind(' ') else {
                    continue;
                };
                let (series, value) = (&line[..split], line[split + 1..].trim());
                let Ok(value) = value.parse::<f64>() else {
                    continue;
                };
                let name = series.split(['{', ' ']).next().unwrap_or_default();
                entries.push((name.to_owned(), Line::Sample(series.to_owned(), value)));
            }
        }
    }
    let family_of = |name: &str| -> String {
        if declared.contains_key(name) {
            return name.to_owned();
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix)
                && declared.contains_key(base)
            {
                return base.to_owned();
            }
        }
        name.to_owned()
    };
    for (name, line) in entries {
        let key = family_of(&name);
        let fam = families.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            Family {
                help: None,
                kind: None,
                samples: Vec::new(),
                index: HashMap::new(),
            }
        });
        match line {
            Line::Help(text) => {
                fam.help.get_or_insert(text);
            }
            Line::Type(text) => {
                fam.kind.get_or_insert(text);
            }
            Line::Sample(series, value) => match fam.index.get(&series) {
                Some(&at) => {
                    let sample = &mut fam.samples[at].1;
                    *sample = if key.ends_with("_info") {
                        sample.max(value)
                    } else {
                        *sample + value
                    };
                }
                None => {
                    fam.index.insert(series.clone(), fam.samples.len());
                    fam.samples.push((series, value));
                }
            },
        }
    }
    let mut out = String::new();
    for name in order {
        let fam = &families[&name];
        for line in [&fam.help, &fam.kind].into_iter().flatten() {
            out.push_str(line);
            out.push('\n');
        }
        for (series, value) in &fam.samples {
            out.push_str(series);
            out.push(' ');
            out.push_str(&value.to_string());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn families_are_declared_once_and_series_add_up() {
        let a = "# HELP x_total X.\n# TYPE x_total counter\nx_total{plugin=\"a\"} 2\n# HELP c Open.\n# TYPE c gauge\nc 3\n# HELP b_info B.\n# TYPE b_info gauge\nb_info{version=\"1\"} 1\n# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 0.5\nh_count 1\n";
        let b = "# HELP x_total X.\n# TYPE x_total counter\nx_total{plugin=\"b\"} 5\nx_total{plugin=\"a\"} 1\n# HELP c Open.\n# TYPE c gauge\nc 4\n# HELP b_info B.\n# TYPE b_info gauge\nb_info{version=\"1\"} 1\n# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_sum 1.5\nh_count 2\n";
        let merged = merge_metrics(&[a.to_owned(), b.to_owned()]);
        assert_eq!(merged.matches("# HELP x_total").count(), 1);
        assert!(merged.contains("x_total{plugin=\"a\"} 3\n"), "{merged}");
        assert!(merged.contains("x_total{plugin=\"b\"} 5\n"), "{merged}");
        assert!(merged.contains("\nc 7\n"), "{merged}");
        assert!(merged.contains("b_info{version=\"1\"} 1\n"), "{merged}");
        assert!(
            merged.contains("h_bucket{le=\"1\"} 3\nh_sum 2\nh_count 3\n"),
            "{merged}"
        );
    }

    #[test]
    fn plugin_statuses_of_two_workers_add_up() {
        let mut plugins = BTreeMap::new();
        merge_plugins(
            &mut plugins,
            &json!({"Plugins": {"a": {"Events": 2, "Instances": [1], "Version": "1", "LastStartInstance": 5}}}),
        );
        merge_plugins(
            &mut plugins,
            &json!({"Plugins": {"a": {"Events": 3, "Instances": [2], "Version": "1", "LastStartInstance": 9}, "b": {"Events": 1}}}),
        );
        assert_eq!(
            plugins["a"],
            json!({"Events": 5, "Instances": [1, 2], "Version": "1", "LastStartInstance": 9})
        );
        assert_eq!(plugins["b"], json!({"Events": 1}));
    }
}
