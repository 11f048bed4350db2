//! Each connection's slot on the [board](crate::board): what it is doing, for
//! the watchdog's stuck-request view and, with process isolation, for the supervisor.

use std::{os::fd::OwnedFd, sync::Arc};

use crate::board::{Board, ConnSlot};

/// Called with a slot the supervisor assigned once the connection is done with it.
pub type Released = Arc<dyn Fn(u32) + Send + Sync>;

/// A connection's slot, given back when the connection ends.
pub struct Tracked {
    board: Arc<Board>,
    index: u32,
    release: Release,
}

enum Release {
    /// A slot this process handed out itself.
    Local,
    /// A slot the supervisor assigned; it holds a duplicate of the connection (to answer
    /// its request if this process dies), so ending the connection here must shut it down
    /// for Kong to see it end, unless it goes on elsewhere (handed over).
    Supervisor {
        connection: OwnedFd,
        released: Released,
        handed_over: bool,
    },
}

impl Tracked {
    /// A slot of `board`, which this process hands out; `None` when all are taken.
    pub fn local(board: &Arc<Board>) -> Option<Tracked> {
        board.take().map(|index| Tracked {
            board: board.clone(),
            index,
            release: Release::Local,
        })
    }

    /// Slot `index` of the supervisor's `board` for a connection (`connection` is a
    /// duplicate of it, used only to shut it down at the end); `released` tells the
    /// supervisor when the slot is free again.
    pub fn assigned(
        board: &Arc<Board>,
        index: u32,
        connection: OwnedFd,
        released: Released,
    ) -> Option<Tracked> {
        board.slot(index)?.idle();
        Some(Tracked {
            board: board.clone(),
            index,
            release: Release::Supervisor {
                connection,
                released,
                handed_over: false,
            },
        })
    }

    /// The slot.
    pub fn slot(&self) -> &ConnSlot {
        self.board.slot(self.index).expect("a slot of its board")
    }

    /// The connection goes on elsewhere (to a successor): do not shut it down.
    pub fn handed_over(&mut self) {
        if let Release::Supervisor { handed_over, .. } = &mut self.release {
            *handed_over = true;
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        match &self.release {
            Release::Local => self.board.give_back(self.index),
            Release::Supervisor {
                connection,
                released,
                handed_over,
            } => {
                self.slot().free();
                if !handed_over {
                    let _ = rustix::net::shutdown(connection, rustix::net::Shutdown::Both);
                }
                released(self.index);
            }
        }
    }
}
