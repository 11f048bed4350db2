//! Builds the root module of a plugin library (the ABI of `kong-rust-plugin-abi`) from a
//! [`Plugin`] implementation.
//!
//! Every entry point catches panics: plugin code never unwinds into the daemon, and a
//! destructor that panics is contained too (unwinding out of an `extern "C"` function would
//! abort the whole daemon). A caught panic's payload is dropped under `catch_unwind` as well
//! (its `Drop` may panic): see [`dispose_panic`].

use std::{
    mem::ManuallyDrop,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
};

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{RErr, ROk, RResult, RStr, RString},
};

use kong_rust_plugin_abi::{
    ConfiguredBox, ConfiguredFfi, ConfiguredFfi_TO, EventBox, EventFfi, EventFfi_TO, EventPoll,
    FfiWaker, HostLogger, InstanceBox, InstanceFfi, InstanceFfi_TO, Manifest, Phase,
    PluginErrorFfi, PluginModule, PluginModuleRef, StepInput,
};

use crate::{
    InstanceInfo,
    driver::{EventDriver, Input, Step},
    panics::{dispose_panic, take_panic_message},
    plugin::{Plugin, construct},
    runtime::Lease,
};

/// The root module of plugin `P`; called by the code `#[kong_rust_pdk::plugin]` generates.
pub fn module_for<P: Plugin>() -> PluginModuleRef {
    PluginModule {
        manifest: manifest::<P>,
        new_instance: new_instance::<P>,
        set_host_logger: set_host_logger::<P>,
    }
    .leak_into_prefix()
}

extern "C" fn set_host_logger<P: Plugin>(logger: HostLogger) {
    if let Err(payload) = catch_unwind(|| crate::host_log::install(logger, P::NAME)) {
        dispose_panic(payload);
    }
}

fn caught<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> RResult<T, PluginErrorFfi> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => ROk(v),
        Ok(Err(e)) => RErr(PluginErrorFfi {
            message: e.into(),
            panicked: false,
        }),
        Err(panic) => RErr(PluginErrorFfi {
            message: format!("{what} panicked: {}", take_panic_message(panic)).into(),
            panicked: true,
        }),
    }
}

/// The plugin's manifest, as the JSON the daemon reads.
pub fn manifest_of<P: Plugin>() -> Result<Manifest, String> {
    let schema = P::config_schema().map_err(|e| e.to_string())?;
    Ok(
        Manifest::new(P::NAME, P::VERSION, P::PRIORITY, P::PHASES.to_vec(), schema)
            .with_on_failure(P::ON_FAILURE),
    )
}

extern "C" fn manifest<P: Plugin>() -> RResult<RString, PluginErrorFfi> {
    caught("the plugin's config_schema()", || {
        let manifest = manifest_of::<P>()?;
        serde_json::to_string(&manifest)
            .map(RString::from)
            .map_err(|e| format!("cannot encode the plugin manifest: {e}"))
    })
}

extern "C" fn new_instance<P: Plugin>(
    config_json: RStr<'_>,
) -> RResult<ConfiguredBox, PluginErrorFfi> {
    // The constructor runs in the library runtime's context: clients are often built there.
    let runtime = Lease::acquire(P::NAME);
    caught("the plugin's constructor", || {
        let plugin = runtime
            .enter(|| construct::<P>(config_json.as_str()))
            .map_err(|e| e.to_string())?;
        Ok(ConfiguredFfi_TO::from_value(
            Configured(Hosted::new(Arc::new(plugin), runtime)),
            TD_Opaque,
        ))
    })
}

/// A plugin with a lease on its library's runtime. Drops the plugin inside `catch_unwind`
/// and inside the runtime's context (a client may need it to close), before the lease:
/// the runtime stops only after the last plugin is gone.
struct Hosted<P> {
    plugin: ManuallyDrop<Arc<P>>,
    runtime: Lease,
}

impl<P> Hosted<P> {
    fn new(plugin: Arc<P>, runtime: Lease) -> Hosted<P> {
        Hosted {
            plugin: ManuallyDrop::new(plugin),
            runtime,
        }
    }

    fn share(&self) -> Hosted<P> {
        Hosted::new(Arc::clone(&self.plugin), self.runtime.clone())
    }
}

impl<P> Drop for Hosted<P> {
    fn drop(&mut self) {
        // SAFETY: taken once, here, and never used again.
        let plugin = unsafe { ManuallyDrop::take(&mut self.plugin) };
        let runtime = &self.runtime;
        let dropped = catch_unwind(AssertUnwindSafe(move || runtime.enter(|| drop(plugin))));
        if let Err(payload) = dropped {
            dispose_panic(payload);
        }
    }
}

struct Configured<P>(Hosted<P>);

impl<P: Plugin> ConfiguredFfi for Configured<P> {
    fn bind(&self, instance_json: RStr<'_>) -> RResult<InstanceBox, PluginErrorFfi> {
        caught("binding an instance", || {
            let info = InstanceInfo::from_json(instance_json.as_str())
                .map_err(|e| format!("bad instance description: {e}"))?;
            Ok(InstanceFfi_TO::from_value(
                Instance {
                    plugin: self.0.share(),
                    info: Arc::new(info),
                },
                TD_Opaque,
            ))
        })
    }
}

struct Instance<P> {
    plugin: Hosted<P>,
    info: Arc<InstanceInfo>,
}

impl<P: Plugin> InstanceFfi for Instance<P> {
    fn start_event(&self, phase_code: u8) -> RResult<EventBox, PluginErrorFfi> {
        caught("starting the handler", || {
            match Phase::from_code(phase_code) {
                Some(phase) if P::PHASES.contains(&phase) => Ok(EventFfi_TO::from_value(
                    EventDriver::start(
                        Arc::clone(&self.plugin.plugin),
                        self.info.clone(),
                        phase,
                        self.plugin.runtime.clone(),
                    ),
                    TD_Opaque,
                )),
                Some(phase) => Err(format!(
                    "plugin {} does not implement the {phase} phase",
                    P::NAME
                )),
                None => Err(format!("unknown phase code {phase_code}")),
            }
        })
    }
}

impl EventFfi for EventDriver {
    fn poll<'a>(&'a mut self, input: StepInput<'_>, waker: &FfiWaker<'_>) -> EventPoll<'a> {
        let input = match input {
            StepInput::Resume => Input::Resume,
            StepInput::Nil => Input::Nil,
            StepInput::Value(bytes) => Input::Value(bytes.as_slice()),
        };
        waker.with_std_waker(|waker| match EventDriver::poll(self, input, waker) {
            Step::Call { method, args } => EventPoll::Call {
                method: method.into(),
                args: args.into(),
            },
            Step::Done => EventPoll::Done,
            Step::Failed(reason) => EventPoll::Failed(reason.into()),
            Step::Panicked(reason) => EventPoll::Panicked(reason.into()),
            Step::Pending => EventPoll::Pending,
        })
    }
}
