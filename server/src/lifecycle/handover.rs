//! Handing over from a running daemon to its successor, refusing nothing.
//!
//! Kong restarts the daemon on `kong reload` (the new nginx worker starts a new daemon while
//! the old one still serves; the old one gets SIGTERM, and very likely SIGKILL, only when
//! the old worker exits) and when it respawns it. A daemon that refused new events while
//! draining, or a socket path with nobody listening for a moment, would let requests through
//! without their plugins: Kong proxies past any error. So the two daemons hand over:
//!
//! 1. The successor asks the serving daemon (over `<lock>.handover`, a unix SEQPACKET
//!    socket only the daemon's user can reach) for the serve lock, which passes as a file
//!    descriptor: it is never free in between, so no standby can grab it.
//! 2. The successor loads the plugins and binds every socket at a temporary name, renamed
//!    onto the socket's path: Kong's next connect reaches the successor, and no connect is
//!    refused in between. It tells the predecessor which plugins it serves.
//! 3. The predecessor stops accepting on those sockets and keeps answering the Steps of its
//!    own events (their handlers live there). Any other request that arrives on one of its
//!    connections goes, with the connection itself (SCM_RIGHTS) and the request's bytes, to
//!    the successor, which answers it (with its own `serverPid` in front: Kong then restarts
//!    its instances there).
//! 4. When its last event ends (or the drain timeout passes), the predecessor hands over its
//!    idle connections too, says it is done, and exits. No connection is closed under Kong.
//!
//! A daemon that gets SIGTERM with no successor yet releases the lock at once; a standby
//! that takes it then performs steps 2-4 with it.

use std::{
    fs::File,
    io::{self, IoSlice, IoSliceMut},
    os::{
        fd::{AsFd, OwnedFd},
        unix::net::UnixStream,
    },
    path::{Path, PathBuf},
};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketType, recvmsg, sendmsg,
};
use serde::{Deserialize, Serialize};

/// Largest message on the hand-over channel; a connection's pending bytes travel in chunks
/// of at most this.
const MESSAGE: usize = 64 * 1024;

/// The hand-over socket next to `lock`.
pub fn channel_path(lock: &Path) -> PathBuf {
    lock.with_extension("handover")
}

/// A control message between the two daemons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Message {
    /// Successor → predecessor: give me the serve lock.
    Takeover,
    /// Successor → predecessor: I hold the lock already (you released it at SIGTERM).
    Succeed,
    /// Predecessor → successor: here is the lock (its descriptor comes with the message).
    Lock {
        /// The predecessor's pid (its sockets may be replaced).
        pid: u32,
    },
    /// Predecessor → successor: go ahead without the lock (released at SIGTERM; take it).
    Released {
        /// The predecessor's pid.
        pid: u32,
    },
    /// Predecessor → successor: already handing over to another daemon.
    Refused {
        /// Why.
        reason: String,
    },
    /// Successor → predecessor: every socket of these plugins is mine now.
    Ready {
        /// The plugin names ([`crate::sockets::EVERY_PLUGIN`] for the socket of all).
        plugins: Vec<String>,
    },
    /// Predecessor → successor: a connection (its descriptor comes with the message), with
    /// `pending` bytes to follow in chunk messages.
    Connection {
        /// The plugin whose socket it came on.
        plugin: String,
        /// How many bytes follow.
        pending: usize,
    },
    /// Predecessor → successor: nothing more will come.
    Done,
}

/// Why the hand-over channel failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The socket failed.
    #[error("hand-over channel: {0}")]
    Io(#[from] io::Error),
    /// A message that is not one of ours.
    #[error("hand-over channel: unexpected message: {0}")]
    Protocol(String),
}

impl From<rustix::io::Errno> for HandoverError {
    fn from(errno: rustix::io::Errno) -> Self {
        HandoverError::Io(errno.into())
    }
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    socket: OwnedFd,
}

/// The listening end of the channel, bound by the serving daemon.
#[derive(Debug)]
pub struct ChannelListener {
    socket: OwnedFd,
    /// Where it is bound.
    pub path: PathBuf,
}

impl ChannelListener {
    /// Binds the channel at `path` (temporary name, then renamed: a predecessor's channel
    /// there is replaced only once this one listens), mode 0600.
    pub fn bind(path: &Path) -> Result<ChannelListener, HandoverError> {
        use std::os::unix::fs::PermissionsExt;
        let temporary = path.with_extension(format!("handover.{}", std::process::id()));
        let _ = std::fs::remove_file(&temporary);
        let socket = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::net::bind(&socket, &SocketAddrUnix::new(&temporary)?)?;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))?;
        rustix::net::listen(&socket, 8)?;
        std::fs::rename(&temporary, path)?;
        Ok(ChannelListener {
            socket,
            path: path.to_owned(),
        })
    }

    /// Waits for a successor to connect.
    pub fn accept(&self) -> Result<Channel, HandoverError> {
        let socket = rustix::net::accept_with(&self.socket, rustix::net::SocketFlags::CLOEXEC)?;
        Ok(Channel { socket })
    }
}

impl Channel {
    /// Connects to a serving daemon's channel; `None` if nobody listens there.
    pub fn connect(path: &Path) -> Result<Option<Channel>, HandoverError> {
        let socket = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        match rustix::net::connect(&socket, &SocketAddrUnix::new(path)?) {
            Ok(()) => Ok(Some(Channel { socket })),
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::CONNREFUSED) => Ok(None),
            Err(errno) => Err(errno.into()),
        }
    }

    /// A connected pair (a supervisor and its worker process: see
    /// [`crate::lifecycle::isolation`]).
    pub fn pair() -> Result<(Channel, Channel), HandoverError> {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((Channel { socket: a }, Channel { socket: b }))
    }

    /// The channel over `socket` (one end of a [`pair`](Self::pair), inherited).
    pub fn from_fd(socket: OwnedFd) -> Channel {
        Channel { socket }
    }

    /// The socket, to hand to a child process.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Sends `message`, with `fd` attached if given.
    pub fn send(&self, message: &Message, fd: Option<&OwnedFd>) -> Result<(), HandoverError> {
        self.send_json(message, fd)
    }

    /// Sends any message as JSON, with `fd` attached if given.
    pub fn send_json<M: Serialize>(
        &self,
        message: &M,
        fd: Option<&OwnedFd>,
    ) -> Result<(), HandoverError> {
        let text =
            serde_json::to_vec(message).map_err(|e| HandoverError::Protocol(e.to_string()))?;
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ancillary = SendAncillaryBuffer::new(&mut space);
        let fds;
        if let Some(fd) = fd {
            fds = [fd.as_fd()];
            ancillary.push(SendAncillaryMessage::ScmRights(&fds));
        }
        sendmsg(
            &self.socket,
            &[IoSlice::new(&text)],
            &mut ancillary,
            SendFlags::NOSIGNAL,
        )?;
        Ok(())
    }

    /// Sends raw bytes (a connection's pending bytes), in chunks.
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), HandoverError> {
        for chunk in bytes.chunks(MESSAGE) {
            rustix::net::send(&self.socket, chunk, SendFlags::NOSIGNAL)?;
        }
        Ok(())
    }

    /// Receives a message and its descriptor, if any. `Ok(None)` when the peer closed.
    pub fn receive(&self) -> Result<Option<(Message, Option<OwnedFd>)>, HandoverError> {
        self.receive_json()
    }

    /// Receives any JSON message and its descriptor, if any. `Ok(None)` when the peer
    /// closed.
    pub fn receive_json<M: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<Option<(M, Option<OwnedFd>)>, HandoverError> {
        let mut buffer = vec![0u8; MESSAGE];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ancillary = RecvAncillaryBuffer::new(&mut space);
        let received = recvmsg(
            &self.socket,
            &mut [IoSliceMut::new(&mut buffer)],
            &mut ancillary,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        let mut fd = None;
        for message in ancillary.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                for received in fds {
                    // One descriptor per message; any extra is closed by its drop.
                    fd.get_or_insert(received);
                }
            }
        }
        if received.bytes == 0 {
            return Ok(None);
        }
        let message = serde_json::from_slice(&buffer[..received.bytes])
            .map_err(|e| HandoverError::Protocol(e.to_string()))?;
        Ok(Some((message, fd)))
    }

    /// Receives exactly `len` raw bytes (pending bytes of a connection).
    pub fn receive_bytes(&self, len: usize) -> Result<Vec<u8>, HandoverError> {
        let mut bytes = Vec::with_capacity(len);
        let mut chunk = vec![0u8; MESSAGE];
        while bytes.len() < len {
            let n = rustix::net::recv(&self.socket, &mut chunk, RecvFlags::empty())?.0;
            if n == 0 {
                return Err(HandoverError::Protocol(
                    "closed in the middle of a connection's bytes".into(),
                ));
            }
            bytes.extend_from_slice(&chunk[..n]);
        }
        Ok(bytes)
    }

    /// Sends a connection: its descriptor, the plugin it belongs to, its pending bytes.
    pub fn send_connection(
        &self,
        stream: UnixStream,
        plugin: &str,
        pending: &[u8],
    ) -> Result<(), HandoverError> {
        let fd = OwnedFd::from(stream);
        self.send(
            &Message::Connection {
                plugin: plugin.to_owned(),
                pending: pending.len(),
            },
            Some(&fd),
        )?;
        self.send_bytes(pending)
        // `fd` closes here: the successor's copy keeps the connection open.
    }
}

/// The lock file behind a received descriptor.
pub fn lock_file(fd: OwnedFd) -> File {
    File::from(fd)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn messages_connections_and_bytes_cross_the_channel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.handover");
        assert!(Channel::connect(&path).unwrap().is_none(), "nobody listens");
        let listener = ChannelListener::bind(&path).unwrap();
        let successor = Channel::connect(&path).unwrap().unwrap();
        let predecessor = listener.accept().unwrap();

        successor.send(&Message::Takeover, None).unwrap();
        let (message, fd) = predecessor.receive().unwrap().unwrap();
        assert_eq!((message, fd.is_none()), (Message::Takeover, true));

        // A connection with two chunks of pending bytes, still usable on the other side.
        let (mut kong, ours) = UnixStream::pair().unwrap();
        let pending = vec![7u8; MESSAGE + 10];
        predecessor
            .send_connection(ours, "rust-hello", &pending)
            .unwrap();
        let (message, fd) = successor.receive().unwrap().unwrap();
        assert_eq!(
            message,
            Message::Connection {
                plugin: "rust-hello".into(),
                pending: pending.len()
            }
        );
        assert_eq!(successor.receive_bytes(pending.len()).unwrap(), pending);
        let mut adopted = UnixStream::from(fd.expect("the connection's descriptor"));
        adopted.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        kong.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");

        drop(predecessor);
        assert!(successor.receive().unwrap().is_none(), "closed");
    }
}
