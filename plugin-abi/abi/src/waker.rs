//! A `Waker` that can cross the FFI boundary.
//!
//! `std::task::Waker` has no stable layout, so the daemon hands a plugin an [`FfiWaker`]: a
//! pointer plus a `#[repr(C)]` vtable of daemon functions. The plugin turns it back into a
//! `std::task::Waker` for its futures. The daemon's waker is only *borrowed* for a poll: it
//! is copied into an owned one only if a plugin future actually keeps it, so the hot path
//! (a handler stopping at a PDK call) allocates nothing.

use std::{
    marker::PhantomData,
    mem::ManuallyDrop,
    task::{RawWaker, RawWakerVTable, Waker},
};

use abi_stable::StableAbi;

/// A waker that crosses the FFI boundary, either borrowed for one poll (`FfiWaker<'a>`,
/// valid as long as the `Waker` it borrows) or owned (`FfiWaker<'static>`, from `clone`).
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiWaker<'a> {
    data: *const (),
    vtable: &'static FfiWakerVTable,
    /// A borrowed waker must not outlive the `Waker` it points at.
    _borrow: PhantomData<&'a ()>,
}

// SAFETY: both vtables wrap a `std::task::Waker`, which is `Send + Sync`; a borrowed one
// cannot outlive it (the lifetime).
unsafe impl Send for FfiWaker<'_> {}
// SAFETY: as above.
unsafe impl Sync for FfiWaker<'_> {}

#[repr(C)]
#[derive(StableAbi)]
struct FfiWakerVTable {
    /// Returns an owned copy.
    clone: unsafe extern "C" fn(*const ()) -> FfiWaker<'static>,
    /// Wakes and consumes an owned waker.
    wake: unsafe extern "C" fn(*const ()),
    wake_by_ref: unsafe extern "C" fn(*const ()),
    /// Releases an owned waker; nothing for a borrowed one.
    drop: unsafe extern "C" fn(*const ()),
}

impl<'a> FfiWaker<'a> {
    /// Borrows `waker` for the duration of one poll.
    pub fn borrowed(waker: &'a Waker) -> FfiWaker<'a> {
        FfiWaker {
            data: (waker as *const Waker).cast(),
            vtable: &BORROWED,
            _borrow: PhantomData,
        }
    }

    /// Runs `f` with a `std::task::Waker` that forwards to this FFI waker.
    pub fn with_std_waker<R>(&self, f: impl FnOnce(&Waker) -> R) -> R {
        let raw = RawWaker::new((self as *const FfiWaker<'a>).cast(), &STD_BORROWED);
        // SAFETY: STD_BORROWED upholds the RawWaker contract for a borrowed FfiWaker, which
        // outlives the call; ManuallyDrop keeps the (no-op) drop from running twice.
        let waker = ManuallyDrop::new(unsafe { Waker::from_raw(raw) });
        f(&waker)
    }
}

impl FfiWaker<'_> {
    /// An owned copy, independent of any borrow.
    pub fn to_owned_waker(&self) -> FfiWaker<'static> {
        // SAFETY: `data` belongs to this vtable.
        unsafe { (self.vtable.clone)(self.data) }
    }
}

impl<'a> Clone for FfiWaker<'a> {
    fn clone(&self) -> FfiWaker<'a> {
        self.to_owned_waker()
    }
}

impl Drop for FfiWaker<'_> {
    fn drop(&mut self) {
        // SAFETY: `data` belongs to this vtable and is released once.
        unsafe { (self.vtable.drop)(self.data) }
    }
}

// ---- daemon side: FfiWaker over a std Waker -------------------------------------------

static BORROWED: FfiWakerVTable = FfiWakerVTable {
    clone: borrowed_clone,
    wake: borrowed_wake_by_ref,
    wake_by_ref: borrowed_wake_by_ref,
    drop: noop,
};

static OWNED: FfiWakerVTable = FfiWakerVTable {
    clone: owned_clone,
    wake: owned_wake,
    wake_by_ref: owned_wake_by_ref,
    drop: owned_drop,
};

unsafe extern "C" fn borrowed_clone(data: *const ()) -> FfiWaker<'static> {
    // SAFETY: a borrowed FfiWaker points at a live `Waker`.
    let waker = unsafe { &*data.cast::<Waker>() };
    FfiWaker {
        data: Box::into_raw(Box::new(waker.clone())).cast(),
        vtable: &OWNED,
        _borrow: PhantomData,
    }
}

unsafe extern "C" fn borrowed_wake_by_ref(data: *const ()) {
    // SAFETY: as in `borrowed_clone`.
    unsafe { &*data.cast::<Waker>() }.wake_by_ref();
}

unsafe extern "C" fn noop(_: *const ()) {}

unsafe extern "C" fn owned_clone(data: *const ()) -> FfiWaker<'static> {
    // SAFETY: an owned FfiWaker points at a boxed `Waker`; cloning borrows it.
    unsafe { borrowed_clone(data) }
}

unsafe extern "C" fn owned_wake(data: *const ()) {
    // SAFETY: the box was made by `borrowed_clone` and is consumed once.
    unsafe { Box::from_raw(data.cast::<Waker>().cast_mut()) }.wake();
}

unsafe extern "C" fn owned_wake_by_ref(data: *const ()) {
    // SAFETY: as in `borrowed_wake_by_ref`.
    unsafe { borrowed_wake_by_ref(data) }
}

unsafe extern "C" fn owned_drop(data: *const ()) {
    // SAFETY: the box was made by `borrowed_clone` and is released once.
    drop(unsafe { Box::from_raw(data.cast::<Waker>().cast_mut()) });
}

// ---- plugin side: std Waker over an FfiWaker ------------------------------------------

/// A std waker borrowing an `FfiWaker` (data = `*const FfiWaker<'_>`).
static STD_BORROWED: RawWakerVTable = RawWakerVTable::new(
    std_clone,
    std_borrowed_wake_by_ref,
    std_borrowed_wake_by_ref,
    std_noop,
);

/// A std waker owning a boxed `FfiWaker` (data = `Box<FfiWaker>`).
static STD_OWNED: RawWakerVTable = RawWakerVTable::new(
    std_clone,
    std_owned_wake,
    std_borrowed_wake_by_ref,
    std_owned_drop,
);

unsafe fn std_clone(data: *const ()) -> RawWaker {
    // SAFETY: both std vtables point at a live FfiWaker.
    let ffi = unsafe { &*data.cast::<FfiWaker<'_>>() };
    RawWaker::new(
        Box::into_raw(Box::new(ffi.to_owned_waker())).cast(),
        &STD_OWNED,
    )
}

unsafe fn std_borrowed_wake_by_ref(data: *const ()) {
    // SAFETY: as in `std_clone`.
    let ffi = unsafe { &*data.cast::<FfiWaker<'_>>() };
    // SAFETY: `data` belongs to this vtable.
    unsafe { (ffi.vtable.wake_by_ref)(ffi.data) }
}

unsafe fn std_noop(_: *const ()) {}

unsafe fn std_owned_wake(data: *const ()) {
    // SAFETY: STD_OWNED data is a box made by `std_clone`, consumed once.
    let ffi = unsafe { Box::from_raw(data.cast::<FfiWaker<'static>>().cast_mut()) };
    let ffi = ManuallyDrop::new(*ffi);
    // SAFETY: `wake` consumes the FfiWaker's data, so its Drop must not run.
    unsafe { (ffi.vtable.wake)(ffi.data) }
}

unsafe fn std_owned_drop(data: *const ()) {
    // SAFETY: as in `std_owned_wake`; dropping the FfiWaker releases the daemon's waker.
    drop(unsafe { Box::from_raw(data.cast::<FfiWaker<'static>>().cast_mut()) });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    use std::task::Wake;

    struct Counter(AtomicUsize);
    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn borrowed_and_cloned_wakers_reach_the_original() {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let ffi = FfiWaker::borrowed(&waker);
        let kept = ffi.with_std_waker(|w| {
            w.wake_by_ref();
            w.clone()
        });
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        let second = kept.clone();
        kept.wake();
        second.wake_by_ref();
        drop(second);
        assert_eq!(counter.0.load(Ordering::SeqCst), 3);
        // Only the original waker still holds the counter.
        assert_eq!(Arc::strong_count(&counter), 2);
    }
}
