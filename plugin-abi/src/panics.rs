//! Caught panics: their messages, and their payloads disposed of without unwinding again.
//! Everything that runs plugin code under `catch_unwind` (the driver, the runtime, the
//! exported entry points, the log hook) uses these.

use std::{
    any::Any,
    panic::{AssertUnwindSafe, catch_unwind},
};

/// The message of a caught panic; the payload is then disposed of with [`dispose_panic`].
pub fn take_panic_message(payload: Box<dyn Any + Send>) -> String {
    let message = panic_message(&*payload).to_owned();
    dispose_panic(payload);
    message
}

/// Drops a caught panic's payload without letting it unwind: a payload's `Drop` may panic
/// too (and unwinding out of the plugin's FFI functions would abort the daemon), so it is
/// dropped under `catch_unwind`, and the payload of *that* panic is leaked.
pub fn dispose_panic(payload: Box<dyn Any + Send>) {
    if let Err(second) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(second);
    }
}

/// The message of a panic payload, as `std` prints it.
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}
