//! What became of each event, as Kong would act on it, and the tallies of a run and of
//! each restart window.

use std::time::{Duration, Instant};

use crate::report::{EndedCount, Outcomes, WindowReport};

/// The PDK function that ended an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EndMethod {
    /// `kong.response.exit`.
    Exit,
    /// `kong.response.error`.
    Error,
}

impl EndMethod {
    /// From a method name, if it ends the event.
    pub fn of(method: &[u8]) -> Option<EndMethod> {
        match method {
            b"kong.response.exit" => Some(EndMethod::Exit),
            b"kong.response.error" => Some(EndMethod::Error),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            EndMethod::Exit => "kong.response.exit",
            EndMethod::Error => "kong.response.error",
        }
    }
}

/// How one event ended, and so what Kong does with its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler returned (`"ret"`): the request goes on with the plugin's effects.
    Returned,
    /// `kong.response.exit`/`error` (the plugin's, or the daemon's in a failed plugin's
    /// place): the request ends with `status` (0 if the call named none).
    Ended {
        /// Which function.
        method: EndMethod,
        /// Its status argument.
        status: u16,
    },
    /// `--abandon`: Kong's Lua raised inside a PDK call, so no further Step was sent;
    /// the request ends with Kong's 500.
    Abandoned,
    /// StartInstance failed, so `get_instance_id` raised: Kong's 500.
    StartFailed(String),
    /// The daemon answered with an error: Kong logs it and proxies the request **past
    /// the plugin**.
    ErrorReply(String),
    /// No daemon could be reached (nothing listening, socket gone; or the instance could
    /// not be claimed): Kong logs it and proxies past the plugin.
    Refused(String),
    /// A call found its connection closed or broken: Kong logs it and proxies past the
    /// plugin.
    ConnectionLost(String),
}

impl Outcome {
    /// Whether the request was served as the plugin meant (returned or ended by a call):
    /// its latency counts in the percentiles.
    pub fn served(&self) -> bool {
        matches!(self, Outcome::Returned | Outcome::Ended { .. })
    }

    /// Whether this is a failure a restart could cause: anything but a return, an end
    /// below 500, or an event `--abandon` dropped on purpose.
    pub fn failed(&self) -> bool {
        match self {
            Outcome::Returned | Outcome::Abandoned => false,
            Outcome::Ended { status, .. } => *status >= 500,
            _ => true,
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Outcome::StartFailed(t)
            | Outcome::ErrorReply(t)
            | Outcome::Refused(t)
            | Outcome::ConnectionLost(t) => Some(t),
            _ => None,
        }
    }
}

/// Counts of outcomes.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Events run, whatever their outcome.
    pub events: u64,
    returned: u64,
    /// (method, status, events), in first-seen order (a run sees few).
    ended: Vec<(EndMethod, u16, u64)>,
    abandoned: u64,
    start_failures: u64,
    error_replies: u64,
    refused: u64,
    connection_lost: u64,
    first_error: Option<String>,
}

impl Tally {
    /// Counts one outcome.
    pub fn add(&mut self, outcome: &Outcome) {
        self.events += 1;
        match outcome {
            Outcome::Returned => self.returned += 1,
            Outcome::Ended { method, status } => self.count_ended(*method, *status, 1),
            Outcome::Abandoned => self.abandoned += 1,
            Outcome::StartFailed(_) => self.start_failures += 1,
            Outcome::ErrorReply(_) => self.error_replies += 1,
            Outcome::Refused(_) => self.refused += 1,
            Outcome::ConnectionLost(_) => self.connection_lost += 1,
        }
        if self.first_error.is_none()
            && let Some(text) = outcome.text()
        {
            self.first_error = Some(text.to_owned());
        }
    }

    fn count_ended(&mut self, method: EndMethod, status: u16, n: u64) {
        match self
            .ended
            .iter_mut()
            .find(|(m, s, _)| *m == method && *s == status)
        {
            Some((_, _, count)) => *count += n,
            None => self.ended.push((method, status, n)),
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: &Tally) {
        self.events += other.events;
        self.returned += other.returned;
        for &(method, status, n) in &other.ended {
            self.count_ended(method, status, n);
        }
        self.abandoned += other.abandoned;
        self.start_failures += other.start_failures;
        self.error_replies += other.error_replies;
        self.refused += other.refused;
        self.connection_lost += other.connection_lost;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    /// The report's form.
    pub fn outcomes(&self) -> Outcomes {
        let mut ended: Vec<EndedCount> = self
            .ended
            .iter()
            .map(|&(method, status, events)| EndedCount {
                method: method.name().to_owned(),
                status,
                events,
            })
            .collect();
        ended.sort_by(|a, b| (&a.method, a.status).cmp(&(&b.method, b.status)));
        Outcomes {
            returned: self.returned,
            ended,
            abandoned: self.abandoned,
            start_instance_failures: self.start_failures,
            error_replies: self.error_replies,
            refused: self.refused,
            connection_lost: self.connection_lost,
            proxied_past_plugin: self.error_replies + self.refused + self.connection_lost,
            first_error: self.first_error.clone(),
        }
    }
}

/// What happened in one stretch of a run: before the first restart, or from one restart
/// to the next (events are placed by when they ended).
#[derive(Debug, Clone, Default)]
pub struct Window {
    tally: Tally,
    max_latency: Duration,
    /// Start of the first failed event and end of the last one.
    failures: Option<(Instant, Instant)>,
}

impl Window {
    /// Counts an event that ran from `start` to `end`.
    pub fn add(&mut self, outcome: &Outcome, start: Instant, end: Instant) {
        self.tally.add(outcome);
        self.max_latency = self.max_latency.max(end - start);
        if outcome.failed() {
            self.failures = Some(match self.failures {
                None => (start, end),
                Some((first, last)) => (first.min(start), last.max(end)),
            });
        }
    }

    /// Adds another worker's window.
    pub fn merge(&mut self, other: &Window) {
        self.tally.merge(&other.tally);
        self.max_latency = self.max_latency.max(other.max_latency);
        self.failures = match (self.failures, other.failures) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (one, other) => one.or(other),
        };
    }

    /// The report's form. The gap is the longer of the longest event and the stretch
    /// from the first failed event's start to the last one's end.
    pub fn report(&self) -> WindowReport {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let failure_span = self.failures.map_or(Duration::ZERO, |(a, b)| b - a);
        WindowReport {
            events: self.tally.events,
            gap_ms: ms(self.max_latency.max(failure_span)),
            max_latency_ms: ms(self.max_latency),
            failure_span_ms: ms(failure_span),
            outcomes: self.tally.outcomes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_sort_outcomes_as_kong_acts_on_them() {
        let mut a = Tally::default();
        a.add(&Outcome::Returned);
        a.add(&Outcome::Ended {
            method: EndMethod::Error,
            status: 500,
        });
        a.add(&Outcome::ErrorReply("boom".into()));
        let mut b = Tally::default();
        b.add(&Outcome::Ended {
            method: EndMethod::Error,
            status: 500,
        });
        b.add(&Outcome::Refused("gone".into()));
        b.add(&Outcome::ConnectionLost("closed".into()));
        b.add(&Outcome::Abandoned);
        a.merge(&b);
        let o = a.outcomes();
        assert_eq!(a.events, 7);
        assert_eq!(o.returned, 1);
        assert_eq!(o.ended.len(), 1);
        assert_eq!((o.ended[0].status, o.ended[0].events), (500, 2));
        assert_eq!(o.proxied_past_plugin, 3);
        assert_eq!(o.abandoned, 1);
        assert_eq!(o.first_error.as_deref(), Some("boom"));
    }

    #[test]
    fn a_window_gap_covers_the_longest_event_and_the_failures() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = Window::default();
        w.add(&Outcome::Returned, at(0), at(5));
        w.add(&Outcome::Refused("x".into()), at(10), at(11));
        let mut other = Window::default();
        other.add(&Outcome::ConnectionLost("y".into()), at(30), at(40));
        other.add(&Outcome::Abandoned, at(0), at(100));
        w.merge(&other);
        let r = w.report();
        assert_eq!(r.failure_span_ms, 30.0);
        assert_eq!(r.max_latency_ms, 100.0);
        assert_eq!(r.gap_ms, 100.0);
        assert_eq!(r.events, 4);
    }
}
