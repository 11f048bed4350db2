//! A root module named like the real one and claiming the daemon's ABI version, with a
//! different layout: the daemon must refuse it with a clear error instead of calling into
//! it (abi_stable compares the layouts).

use abi_stable::{
    StableAbi, declare_root_module_statics, export_root_module, library::RootModule,
    prefix_type::PrefixTypeTrait, sabi_types::VersionStrings, std_types::RString,
};

/// Same names as the real root module, other fields.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// A signature the daemon does not expect.
    #[sabi(last_prefix_field)]
    pub info: extern "C" fn() -> RString,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "kong_rust_plugin";
    const NAME: &'static str = "kong_rust_plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(kong_rust_plugin_abi::ABI_VERSION);
}

extern "C" fn info() -> RString {
    "not the expected layout".into()
}

/// The export, in a private module: `#[export_root_module]` also generates an undocumented
/// public static, which the workspace's `missing_docs` lint would flag at the crate root
/// (the symbol is exported by name either way).
mod export {
    use super::*;

    /// The exported root module.
    #[export_root_module]
    pub fn root_module() -> PluginModuleRef {
        PluginModule { info }.leak_into_prefix()
    }
}
