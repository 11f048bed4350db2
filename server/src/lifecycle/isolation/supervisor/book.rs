//! The supervisor's memory of crashes: which plugin configurations were running when a
//! worker died, and which are quarantined because they did it twice within the window.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use crate::daemon::QuarantinedConfig;

/// At most this many configurations are remembered (for showing them), per plugin.
const CONFIGS_PER_PLUGIN: usize = 1024;

/// Crashes and quarantines.
#[derive(Debug)]
pub struct Book {
    window: Duration,
    crashes: HashMap<(String, u64), VecDeque<Instant>>,
    quarantined: HashMap<(String, u64), Quarantine>,
    configs: HashMap<String, HashMap<u64, String>>,
}

#[derive(Debug, Clone, Copy)]
struct Quarantine {
    until: Instant,
    crashes: u32,
}

impl Book {
    /// A book whose crashes count within `window`.
    pub fn new(window: Duration) -> Book {
        Book {
            window,
            crashes: HashMap::new(),
            quarantined: HashMap::new(),
            configs: HashMap::new(),
        }
    }

    /// Remembers configuration `fingerprint` of `plugin` as `config` (canonical JSON).
    pub fn saw(&mut self, plugin: &str, fingerprint: u64, config: String) {
        let configs = self.configs.entry(plugin.to_owned()).or_default();
        if configs.len() >= CONFIGS_PER_PLUGIN && !configs.contains_key(&fingerprint) {
            configs.clear();
        }
        configs.insert(fingerprint, config);
    }

    /// Records one worker death while its threads ran `running` (plugin, configuration
    /// fingerprint): each configuration counts once, however many threads ran it (several
    /// events of it in flight, or a constructor that had just finished). Returns the
    /// configurations this death quarantines.
    pub fn worker_died(
        &mut self,
        mut running: Vec<(String, u64)>,
        now: Instant,
    ) -> Vec<(String, u64)> {
        running.sort_unstable();
        running.dedup();
        running
            .into_iter()
            .filter(|(plugin, fingerprint)| self.crashed(plugin, *fingerprint, now))
            .collect()
    }

    /// Records a crash of a worker while it ran configuration `fingerprint` of `plugin`;
    /// returns whether that quarantines it (its second crash within the window).
    pub fn crashed(&mut self, plugin: &str, fingerprint: u64, now: Instant) -> bool {
        let key = (plugin.to_owned(), fingerprint);
        let times = self.crashes.entry(key.clone()).or_default();
        while times
            .front()
            .is_some_and(|&t| now.duration_since(t) > self.window)
        {
            times.pop_front();
        }
        times.push_back(now);
        let count = times.len() as u32;
        if count < 2 {
            return false;
        }
        let fresh = !self.quarantined.contains_key(&key);
        self.quarantined.insert(
            key,
            Quarantine {
                until: now + self.window,
                crashes: count,
            },
        );
        fresh
    }

    /// Ends the quarantines whose time is up; returns the plugins concerned.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut ended = Vec::new();
        self.quarantined.retain(|(plugin, _), q| {
            let keep = q.until > now;
            if !keep {
                ended.push(plugin.clone());
            }
            keep
        });
        let window = self.window;
        self.crashes.retain(|_, times| {
            times
                .back()
                .is_some_and(|&t| now.duration_since(t) <= window)
        });
        ended.sort();
        ended.dedup();
        ended
    }

    /// A new build of `plugin` is served: its crashes and quarantines are forgotten.
    /// Returns whether it had any quarantined configuration.
    pub fn forget(&mut self, plugin: &str) -> bool {
        let before = self.quarantined.len();
        self.quarantined.retain(|(p, _), _| p != plugin);
        self.crashes.retain(|(p, _), _| p != plugin);
        before != self.quarantined.len()
    }

    /// The quarantined configurations of `plugins` (all plugins if `None`).
    pub fn list(&self, plugins: Option<&[String]>, now: Instant) -> Vec<QuarantinedConfig> {
        let mut list: Vec<QuarantinedConfig> = self
            .quarantined
            .iter()
            .filter(|((plugin, _), _)| plugins.is_none_or(|p| p.contains(plugin)))
            .map(|((plugin, fingerprint), q)| QuarantinedConfig {
                plugin: plugin.clone(),
                config_id: format!("{fingerprint:016x}"),
                config: self
                    .configs
                    .get(plugin)
                    .and_then(|c| c.get(fingerprint))
                    .cloned(),
                crashes: q.crashes,
                seconds_left: q.until.saturating_duration_since(now).as_secs(),
            })
            .collect();
        list.sort_by(|a, b| (&a.plugin, &a.config_id).cmp(&(&b.plugin, &b.config_id)));
        list
    }

    /// The configuration `fingerprint` of `plugin`, if seen.
    pub fn config(&self, plugin: &str, fingerprint: u64) -> Option<&str> {
        self.configs
            .get(plugin)?
            .get(&fingerprint)
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_death_counts_once_per_configuration_however_many_threads_ran_it() {
        let mut book = Book::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let twice = vec![
            ("a".to_owned(), 7),
            ("b".to_owned(), 1),
            ("a".to_owned(), 7),
        ];
        assert!(book.worker_died(twice.clone(), t0).is_empty());
        assert!(book.list(None, t0).is_empty());
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            book.worker_died(twice, t1),
            [("a".to_owned(), 7), ("b".to_owned(), 1)]
        );
        assert_eq!(book.list(None, t1)[0].crashes, 2);
    }

    #[test]
    fn a_second_crash_within_the_window_quarantines_until_it_passes() {
        let mut book = Book::new(Duration::from_secs(10));
        let t0 = Instant::now();
        book.saw("a", 7, "{\"x\":1}".into());
        assert!(!book.crashed("a", 7, t0));
        assert!(!book.crashed("a", 8, t0));
        assert!(book.list(None, t0).is_empty());
        assert!(book.crashed("a", 7, t0 + Duration::from_secs(3)));
        let list = book.list(Some(&["a".to_owned()]), t0 + Duration::from_secs(3));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].config.as_deref(), Some("{\"x\":1}"));
        assert_eq!((list[0].crashes, list[0].seconds_left), (2, 10));
        assert_eq!(list[0].fingerprint(), Some(7));
        assert!(book.expire(t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(book.expire(t0 + Duration::from_secs(14)), ["a"]);
        assert!(book.list(None, t0).is_empty());
        // Crashes further apart than the window never quarantine.
        assert!(!book.crashed("a", 9, t0));
        assert!(!book.crashed("a", 9, t0 + Duration::from_secs(11)));
        // A new build forgets everything of the plugin.
        assert!(book.crashed("a", 9, t0 + Duration::from_secs(12)));
        assert!(book.forget("a"));
        assert!(book.list(None, t0).is_empty());
    }
}
