//! The test kit on a small plugin that exercises its moving parts.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use super::*;
use kong_rust_pdk::{
    Kong, PdkError, PdkResult, Value,
    types::{Body, Consumer},
};

struct Gate;

/// Completes on its second poll, after waking its waker from another thread: the kit
/// must park and resume the handler like an executor.
struct OwnIo(bool);

impl Future for OwnIo {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        let waker = cx.waker().clone();
        std::thread::spawn(move || waker.wake());
        Poll::Pending
    }
}

impl Plugin for Gate {
    const NAME: &'static str = "gate";
    const VERSION: &'static str = "0.1.0";
    const PRIORITY: i64 = 1;
    const PHASES: &'static [Phase] = &[Phase::Access, Phase::Response, Phase::Log];
    type Config = serde_json::Value;

    fn config_schema() -> Result<serde_json::Value, kong_rust_pdk::schema::SchemaError> {
        Ok(serde_json::json!({"type": "record", "fields": []}))
    }

    fn new(_: serde_json::Value) -> Result<Self, kong_rust_pdk::ConfigError> {
        Ok(Gate)
    }

    async fn access(&self, kong: &Kong) -> PdkResult<()> {
        OwnIo(false).await;
        let consumer = kong.client().get_consumer().await?;
        kong.ctx().shared().set("seen", true).await?;
        if kong.request().get_query_arg("deny").await?.is_some() {
            let body = Body::json(&serde_json::json!({"denied": true}))?;
            // Ends the handler: `?` has type `!`.
            kong.response().exit(403, body).await?;
        }
        if kong.request().get_header("x-late").await?.is_some() {
            // Not awaited to the end: the next call must be refused.
            let response = kong.response();
            let exit = response.exit(400, "late");
            let mut exit = std::pin::pin!(exit);
            let waker = std::task::Waker::noop();
            let _ = exit.as_mut().poll(&mut Context::from_waker(waker));
            return kong.log().err("after exit").await;
        }
        let name = consumer.and_then(|c| c.username).unwrap_or_default();
        kong.service()
            .request()
            .set_header("x-consumer", &name)
            .await
    }

    async fn response(&self, kong: &Kong) -> PdkResult<()> {
        let body = kong.service().response().get_raw_body().await?;
        kong.response()
            .set_header("x-upstream-bytes", &body.len().to_string())
            .await
    }

    async fn log(&self, kong: &Kong) -> PdkResult<()> {
        let seen = kong.ctx().shared().get_as::<bool>("seen").await?;
        let entry = kong.log().serialize().await?;
        let status = entry["response"]["status"].clone();
        kong.log()
            .info(&format!("seen={seen:?} status={status}"))
            .await
    }
}

fn gate() -> Arc<Gate> {
    instance::<Gate>(serde_json::json!({})).unwrap()
}

#[test]
fn phases_share_the_request_and_record_their_effects() {
    let request = TestRequest::get("/items")
        .consumer(Consumer {
            id: "c1".into(),
            username: Some("alice".into()),
            ..Consumer::default()
        })
        .upstream_response(UpstreamResponse::new(201).header("Via", "up").body("12345"));
    let mut sim = Simulation::new(request);
    let outcomes = sim.run_phases(&gate(), &[Phase::Access, Phase::Response, Phase::Log]);
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    assert_eq!(sim.upstream_request.header("x-consumer"), Some("alice"));
    assert_eq!(sim.response.header("x-upstream-bytes"), Some("5"));
    assert_eq!(sim.response.header("via"), Some("up"));
    assert_eq!(sim.ctx_shared["seen"], Value::Bool(true));
    assert!(
        sim.logged("info", "seen=Some(true) status=201"),
        "{:?}",
        sim.logs
    );
    assert!(sim.unknown_calls.is_empty());
}

#[test]
fn exit_ends_the_handler_and_is_recorded() {
    let sim = TestRequest::get("/?deny").run(&gate(), Phase::Access);
    let exit = sim.exit.as_ref().expect("an exit");
    assert_eq!(exit.status, 403);
    // A JSON body goes to Kong as text, with Kong's own JSON content type.
    assert_eq!(exit.body, Some(Value::from(r#"{"denied":true}"#)));
    assert_eq!(
        exit.headers.get("Content-Type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(sim.response.status, 403);
    assert_eq!(sim.response.body, br#"{"denied":true}"#);
    assert_eq!(sim.methods().last(), Some(&"kong.response.exit"));
}

#[test]
fn a_call_after_an_exit_is_refused() {
    let mut sim = Simulation::new(TestRequest::get("/").header("x-late", "1"));
    let outcome = sim.run(&gate(), Phase::Access);
    let err = outcome.result.unwrap_err();
    assert!(err.contains("was called after kong.response.exit"), "{err}");
}

#[test]
fn calls_outside_their_phase_fail_as_in_kong() {
    // serialize is a log-phase function: calling it in access aborts the handler.
    struct Early;
    impl Plugin for Early {
        const NAME: &'static str = "early";
        const VERSION: &'static str = "0.1.0";
        const PRIORITY: i64 = 1;
        const PHASES: &'static [Phase] = &[Phase::Access];
        type Config = serde_json::Value;
        fn config_schema() -> Result<serde_json::Value, kong_rust_pdk::schema::SchemaError> {
            Ok(serde_json::json!({"type": "record", "fields": []}))
        }
        fn new(_: serde_json::Value) -> Result<Self, kong_rust_pdk::ConfigError> {
            Ok(Early)
        }
        async fn access(&self, kong: &Kong) -> PdkResult<()> {
            kong.log().serialize().await.map(|_| ())
        }
    }
    let plugin = instance::<Early>(serde_json::json!({})).unwrap();
    let outcome = Simulation::new(TestRequest::get("/")).run(&plugin, Phase::Access);
    assert!(
        outcome
            .result
            .unwrap_err()
            .contains("cannot be called in access phase")
    );
}

#[test]
fn forced_nil_answers_surface_as_no_value_errors() {
    let mut sim =
        Simulation::new(TestRequest::get("/").answer("kong.service.response.get_raw_body", None));
    let outcome = sim.run(&gate(), Phase::Response);
    let err = outcome.result.unwrap_err();
    assert!(
        err.contains(
            &PdkError::NoValue {
                method: "kong.service.response.get_raw_body".into()
            }
            .to_string()
        ),
        "{err}"
    );
}

#[test]
fn a_handler_that_is_never_woken_fails_instead_of_hanging() {
    async fn stuck(_: &Kong) -> PdkResult<()> {
        std::future::pending::<()>().await;
        Ok(())
    }
    let mut sim = Simulation::new(TestRequest::get("/"));
    let outcome = sim.run_handler(Phase::Access, |k| Box::pin(stuck(k)));
    assert!(outcome.result.unwrap_err().contains("never woken"));
}

#[test]
fn handlers_await_tokio_timers_and_tasks() {
    async fn timed(kong: &Kong) -> PdkResult<()> {
        let started = std::time::Instant::now();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        // A task on the plugin's runtime, answering through a channel.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let _ = tx.send("from a task");
        });
        let answer = rx.await.map_err(PdkError::plugin)?;
        let waited = started.elapsed().as_millis().to_string();
        kong.response().set_header("x-task", answer).await?;
        kong.response().set_header("x-waited-ms", &waited).await
    }
    let sim = TestRequest::get("/").run_handler(Phase::Access, |k| Box::pin(timed(k)));
    assert_eq!(sim.response.header("x-task"), Some("from a task"));
    let waited: u128 = sim.response.header("x-waited-ms").unwrap().parse().unwrap();
    assert!(waited >= 25, "{waited} ms");
}

#[test]
fn a_timeout_around_slow_work_fails_the_call_in_time() {
    async fn impatient(kong: &Kong) -> PdkResult<()> {
        let slow = tokio::time::sleep(std::time::Duration::from_secs(30));
        let verdict = match tokio::time::timeout(std::time::Duration::from_millis(10), slow).await {
            Ok(()) => "done",
            Err(_) => "timed out",
        };
        kong.response().set_header("x-verdict", verdict).await
    }
    let started = std::time::Instant::now();
    let sim = TestRequest::get("/").run_handler(Phase::Access, |k| Box::pin(impatient(k)));
    assert_eq!(sim.response.header("x-verdict"), Some("timed out"));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn blocking_code_runs_off_the_handler_and_its_panics_fail_the_call() {
    async fn offload(kong: &Kong) -> PdkResult<()> {
        let here = std::thread::current().id();
        let there =
            kong_rust_pdk::spawn_blocking(move || std::thread::current().id() != here).await?;
        kong.response()
            .set_header("x-elsewhere", &there.to_string())
            .await?;
        kong_rust_pdk::spawn_blocking(|| panic!("sync client exploded")).await
    }
    let mut sim = Simulation::new(TestRequest::get("/"));
    let outcome = sim.run_handler(Phase::Access, |k| Box::pin(offload(k)));
    assert_eq!(sim.response.header("x-elsewhere"), Some("true"));
    let err = outcome.result.unwrap_err();
    assert!(err.contains("panicked: sync client exploded"), "{err}");
}

#[test]
fn constructors_run_in_the_runtime_and_their_tasks_keep_running() {
    /// Ticks a counter from a task spawned in `new`.
    struct Ticker(Arc<std::sync::atomic::AtomicU64>);

    impl Plugin for Ticker {
        const NAME: &'static str = "ticker";
        const VERSION: &'static str = "0.1.0";
        const PRIORITY: i64 = 1;
        const PHASES: &'static [Phase] = &[Phase::Access];
        type Config = serde_json::Value;
        fn config_schema() -> Result<serde_json::Value, kong_rust_pdk::schema::SchemaError> {
            Ok(serde_json::json!({"type": "record", "fields": []}))
        }
        fn new(_: serde_json::Value) -> Result<Self, kong_rust_pdk::ConfigError> {
            let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let counter = Arc::downgrade(&ticks);
            tokio::spawn(async move {
                while let Some(ticks) = counter.upgrade() {
                    ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    drop(ticks);
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            });
            Ok(Ticker(ticks))
        }
        async fn access(&self, kong: &Kong) -> PdkResult<()> {
            let ticks = self.0.load(std::sync::atomic::Ordering::SeqCst);
            kong.response()
                .set_header("x-ticks", &ticks.to_string())
                .await
        }
    }
    let plugin = instance::<Ticker>(serde_json::json!({})).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while plugin.0.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(std::time::Instant::now() < deadline, "the task never ran");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let sim = TestRequest::get("/").run(&plugin, Phase::Access);
    let ticks: u64 = sim.response.header("x-ticks").unwrap().parse().unwrap();
    assert!(ticks >= 3);
}

#[test]
fn a_kong_version_refuses_the_functions_it_lacks_as_the_daemon_does() {
    async fn retries(kong: &Kong) -> PdkResult<()> {
        match kong.service().set_retries(3).await {
            Err(PdkError::Unavailable { .. }) => kong.log().warn("no retries here").await,
            other => other,
        }
    }
    use kong_rust_pdk::kong_versions::KongVersion;
    let old = TestRequest::get("/")
        .kong_version(KongVersion::V3_4)
        .run_handler(Phase::Access, |k| Box::pin(retries(k)));
    assert!(old.logged("warn", "no retries here"));
    assert_eq!(old.refused_calls[0].0, "kong.service.set_retries");
    assert_eq!(old.upstream_request.retries, None);
    let head = TestRequest::get("/").run_handler(Phase::Access, |k| Box::pin(retries(k)));
    assert_eq!(head.upstream_request.retries, Some(3));
    assert!(head.refused_calls.is_empty());
}

#[test]
fn a_call_kong_raises_on_abandons_the_event_with_kongs_500() {
    async fn early_serialize(kong: &Kong) -> PdkResult<()> {
        kong.log().serialize().await?;
        kong.response().set_header("x-never", "1").await
    }
    let mut sim = Simulation::new(TestRequest::get("/"));
    let outcome = sim.run_handler(Phase::Access, |k| Box::pin(early_serialize(k)));
    let err = outcome.result.unwrap_err();
    assert!(err.contains("abandoned the event"), "{err}");
    assert!(err.contains("only in: log"), "{err}");
    assert_eq!(sim.response.status, 500);
    assert_eq!(sim.response.header("x-never"), None);
}
