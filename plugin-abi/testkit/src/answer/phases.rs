//! Which phases Kong allows a call in: the table of `kong_rust_pdk::kong_versions`, the
//! same one `docs/pdk.md` is generated from.

use kong_rust_pdk::{
    Phase,
    kong_versions::{KongVersion, pdk_function},
};

/// Kong refuses a call outside its phases, raising a Lua error that abandons the event.
/// `None` when `version` allows `method` in `phase` (or does not know `method`: Kong then
/// answers nil, which the caller models).
pub(super) fn phase_error(method: &str, phase: Phase, version: KongVersion) -> Option<String> {
    pdk_function(method)?.phase_error(version, phase)
}
