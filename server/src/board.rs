//! What a serving process records about its work, in memory another process can read.
//!
//! Every connection has a [`ConnSlot`]: idle, part of a message read, a request being
//! handled (its msgid, what it is, since when), or a response being written. The daemon
//! sets it at request boundaries with a few relaxed stores. Its own watchdog reads it to
//! name requests stuck for too long; with process isolation the supervisor reads the
//! worker's board too: when a worker dies, the slots say which requests were being
//! handled, and the supervisor answers each of them (failing closed) on its own
//! connection, so Kong never sees a connection closed under a request (which it would
//! proxy without the plugin).
//!
//! A board is either plain memory (no isolation) or a shared `memfd` mapping created by
//! the supervisor, which also holds the worker's [heartbeats](crate::heartbeat) and its
//! coarse clock. Everything in it is an atomic whose all-zero value means idle, so a fresh
//! mapping is a valid board.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
};

use kong_rust_plugin_abi::Phase;

use crate::heartbeat::Heartbeat;

/// Heartbeats a shared board holds (event loops, constructor threads).
pub const HEARTBEATS: usize = 256;

const MAGIC: u64 = 0x6b72_705f_626f_6172; // "krp_boar"

/// The head of a shared board.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct Header {
    magic: AtomicU64,
    /// The worker's coarse clock (see [`crate::heartbeat::now`]), mirrored by its watchdog.
    pub tick: AtomicU64,
    /// The worker's events alive (running or waiting for Kong), mirrored by its watchdog.
    pub live_events: AtomicU64,
    slots: AtomicU32,
}

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnState {
    /// Not in use.
    Free = 0,
    /// Waiting for Kong's next request.
    Idle = 1,
    /// Part of a message has been read.
    Reading = 2,
    /// A request is being handled: no byte of its response written yet (with process
    /// isolation: recorded before the request leaves the socket, and kept through a first
    /// write that sends the whole response, until the slot says Idle).
    Handling = 3,
    /// Its response is being written.
    Writing = 4,
}

/// The request a connection is handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RequestKind {
    /// Anything but the three below.
    Other = 0,
    /// `plugin.HandleEvent` (its subject is the instance id).
    HandleEvent = 1,
    /// `plugin.Step*` (its subject is the event id).
    Step = 2,
    /// `plugin.StartInstance`.
    StartInstance = 3,
}

/// No plugin slot known (the socket of every plugin).
pub const NO_PLUGIN: u16 = 0xffff;

/// One connection's record. The word packs state (bits 0-3), kind (4-7), phase code (8-15,
/// 0xff: none), plugin slot (16-31) and the tick the state began (32-63).
#[repr(C)]
#[derive(Debug, Default)]
pub struct ConnSlot {
    word: AtomicU64,
    msgid: AtomicU64,
    subject: AtomicU64,
    _reserved: AtomicU64,
}

/// A slot as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotView {
    /// The state.
    pub state: ConnState,
    /// What is handled (meaningful while handling or writing).
    pub kind: RequestKind,
    /// The phase of the event handled, if known.
    pub phase: Option<Phase>,
    /// The plugin slot, if known.
    pub plugin: Option<u16>,
    /// The tick the state began (low 32 bits).
    pub since: u32,
    /// The msgid of the request handled.
    pub msgid: u64,
    /// The event id (Step) or instance id (HandleEvent, StartInstance).
    pub subject: u64,
}

impl ConnSlot {
    fn set(&self, state: ConnState, kind: RequestKind, phase: u8, plugin: u16) {
        let since = crate::heartbeat::now() as u32;
        let word = u64::from(state as u8)
            | u64::from(kind as u8) << 4
            | u64::from(phase) << 8
            | u64::from(plugin) << 16
            | u64::from(since) << 32;
        self.word.store(word, Ordering::Release);
    }

    /// A request starts being handled. The msgid and subject are stored before the state,
    /// so a reader that sees `Handling` sees them.
    pub fn handling(
        &self,
        msgid: u64,
        kind: RequestKind,
        phase: Option<Phase>,
        plugin: u16,
        subject: u64,
    ) {
        self.msgid.store(msgid, Ordering::Relaxed);
        self.subject.store(subject, Ordering::Relaxed);
        self.set(
            ConnState::Handling,
            kind,
            phase.map_or(0xff, Phase::code),
            plugin,
        );
    }

    /// Its response starts being written.
    pub fn writing(&self) {
        self.set(ConnState::Writing, RequestKind::Other, 0xff, NO_PLUGIN);
    }

    /// Waiting for the next request.
    pub fn idle(&self) {
        self.set(ConnState::Idle, RequestKind::Other, 0xff, NO_PLUGIN);
    }

    /// Part of a message is buffered.
    pub fn reading(&self) {
        self.set(ConnState::Reading, RequestKind::Other, 0xff, NO_PLUGIN);
    }

    /// Not in use any more.
    pub fn free(&self) {
        self.word.store(0, Ordering::Release);
    }

    /// What the slot says now.
    pub fn view(&self) -> SlotView {
        let word = self.word.load(Ordering::Acquire);
        let state = match word & 0xf {
            1 => ConnState::Idle,
            2 => ConnState::Reading,
            3 => ConnState::Handling,
            4 => ConnState::Writing,
            _ => ConnState::Free,
        };
        let kind = match (word >> 4) & 0xf {
            1 => RequestKind::HandleEvent,
            2 => RequestKind::Step,
            3 => RequestKind::StartInstance,
            _ => RequestKind::Other,
        };
        let plugin = ((word >> 16) & 0xffff) as u16;
        SlotView {
            state,
            kind,
            phase: Phase::from_code(((word >> 8) & 0xff) as u8),
            plugin: (plugin != NO_PLUGIN).then_some(plugin),
            since: (word >> 32) as u32,
            msgid: self.msgid.load(Ordering::Relaxed),
            subject: self.subject.load(Ordering::Relaxed),
        }
    }
}

/// Where a board's memory comes from.
enum Memory {
    /// Plain memory of this process.
    Heap {
        header: Box<Header>,
        slots: Box<[ConnSlot]>,
    },
    /// A shared mapping of a memfd.
    Mapped { base: *mut u8, len: usize },
}

/// A board: its header, heartbeats and connection slots.
pub struct Board {
    memory: Memory,
    slots: usize,
    /// Free slots (a board this process hands slots out of).
    free: Mutex<Vec<u32>>,
}

// SAFETY: the mapping holds only atomics, shared by design; the pointer is never freed
// while the board lives.
unsafe impl Send for Board {}
// SAFETY: as above: every access goes through atomics.
unsafe impl Sync for Board {}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board")
            .field("slots", &self.slots)
            .field("shared", &matches!(self.memory, Memory::Mapped { .. }))
            .finish()
    }
}

/// Bytes of a shared board with `slots` connection slots.
fn shared_len(slots: usize) -> usize {
    size_of::<Header>() + HEARTBEATS * size_of::<Heartbeat>() + slots * size_of::<ConnSlot>()
}

impl Board {
    /// A board in this process's memory, handing out its own `slots` slots.
    pub fn in_process(slots: usize) -> Board {
        Board {
            memory: Memory::Heap {
                header: Box::default(),
                slots: (0..slots).map(|_| ConnSlot::default()).collect(),
            },
            slots,
            free: Mutex::new((0..slots as u32).rev().collect()),
        }
    }

    /// A new shared board with `slots` connection slots, and the memfd behind it (for the
    /// worker process).
    pub fn create_shared(slots: usize) -> std::io::Result<(Board, OwnedFd)> {
        let len = shared_len(slots);
        let fd = rustix::fs::memfd_create(
            "kong-rust-pluginserver-board",
            rustix::fs::MemfdFlags::CLOEXEC,
        )?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        let board = Board::map(&fd, slots)?;
        board.header().magic.store(MAGIC, Ordering::Relaxed);
        board.header().slots.store(slots as u32, Ordering::Relaxed);
        Ok((board, fd))
    }

    /// Maps the shared board of `fd` (created by the supervisor).
    pub fn open_shared(fd: &OwnedFd) -> std::io::Result<Board> {
        let len = rustix::fs::fstat(fd)?.st_size as usize;
        let fixed = shared_len(0);
        if len < fixed {
            return Err(std::io::Error::other("the board is too small"));
        }
        let slots = (len - fixed) / size_of::<ConnSlot>();
        let board = Board::map(fd, slots)?;
        if board.header().magic.load(Ordering::Relaxed) != MAGIC {
            return Err(std::io::Error::other("not a board"));
        }
        Ok(board)
    }

    fn map(fd: &OwnedFd, slots: usize) -> std::io::Result<Board> {
        let len = shared_len(slots);
        // SAFETY: a fresh shared mapping of `len` bytes of the memfd, which is at least that
        // long; it is unmapped only when the board drops.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Board {
            memory: Memory::Mapped {
                base: base.cast(),
                len,
            },
            slots,
            free: Mutex::new(Vec::new()),
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        match &self.memory {
            Memory::Heap { header, .. } => header,
            // SAFETY: the mapping starts with a Header (page-aligned, zero or initialized
            // atomics).
            Memory::Mapped { base, .. } => unsafe { &*base.cast::<Header>() },
        }
    }

    /// The heartbeats (none in a board of this process: its heartbeats live on the heap).
    pub fn heartbeats(&self) -> &[Heartbeat] {
        match &self.memory {
            Memory::Heap { .. } => &[],
            // SAFETY: HEARTBEATS heartbeats follow the header, 64-byte aligned.
            Memory::Mapped { base, .. } => unsafe {
                std::slice::from_raw_parts(
                    base.add(size_of::<Header>()).cast::<Heartbeat>(),
                    HEARTBEATS,
                )
            },
        }
    }

    /// Every connection slot.
    pub fn slots(&self) -> &[ConnSlot] {
        match &self.memory {
            Memory::Heap { slots, .. } => slots,
            // SAFETY: the slots follow the heartbeats, within the mapping.
            Memory::Mapped { base, .. } => unsafe {
                std::slice::from_raw_parts(
                    base.add(size_of::<Header>() + HEARTBEATS * size_of::<Heartbeat>())
                        .cast::<ConnSlot>(),
                    self.slots,
                )
            },
        }
    }

    /// Slot `index`, if it exists.
    pub fn slot(&self, index: u32) -> Option<&ConnSlot> {
        self.slots().get(index as usize)
    }

    /// Takes a free slot of a board this process hands out.
    pub fn take(&self) -> Option<u32> {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Gives slot `index` back (after marking it free).
    pub fn give_back(&self, index: u32) {
        if let Some(slot) = self.slot(index) {
            slot.free();
        }
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(index);
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        if let Memory::Mapped { base, len } = self.memory {
            // SAFETY: unmaps exactly the mapping made in `map`; nothing borrows it any
            // more (borrows are tied to the board).
            unsafe { libc::munmap(base.cast(), len) };
        }
    }
}

/// A descriptor number as an owned descriptor (one inherited at a fixed number).
///
/// # Safety
/// `fd` must be open and owned by nobody else in this process.
pub unsafe fn owned(fd: i32) -> OwnedFd {
    // SAFETY: as the caller promises.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_board_shows_the_same_slots_through_both_mappings() {
        let (writer, fd) = Board::create_shared(8).unwrap();
        let reader = Board::open_shared(&fd).unwrap();
        assert_eq!(reader.slots().len(), 8);
        let slot = writer.slot(3).unwrap();
        slot.handling(41, RequestKind::Step, Some(Phase::Access), 2, 9001);
        let seen = reader.slot(3).unwrap().view();
        assert_eq!(seen.state, ConnState::Handling);
        assert_eq!(seen.kind, RequestKind::Step);
        assert_eq!(seen.phase, Some(Phase::Access));
        assert_eq!(seen.plugin, Some(2));
        assert_eq!((seen.msgid, seen.subject), (41, 9001));
        slot.writing();
        assert_eq!(reader.slot(3).unwrap().view().state, ConnState::Writing);
        slot.free();
        assert_eq!(reader.slot(3).unwrap().view().state, ConnState::Free);
        writer.header().tick.store(77, Ordering::Relaxed);
        assert_eq!(reader.header().tick.load(Ordering::Relaxed), 77);
        assert_eq!(reader.heartbeats().len(), HEARTBEATS);
        assert!(reader.heartbeats()[0].busy().is_none());
    }

    #[test]
    fn a_board_of_this_process_hands_out_and_takes_back_slots() {
        let board = Board::in_process(2);
        let a = board.take().unwrap();
        let b = board.take().unwrap();
        assert_ne!(a, b);
        assert!(board.take().is_none());
        board.slot(a).unwrap().idle();
        board.give_back(a);
        assert_eq!(board.slot(a).unwrap().view().state, ConnState::Free);
        assert_eq!(board.take(), Some(a));
    }
}
