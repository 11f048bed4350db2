//! Serving Kong's `ProtoBuf:1` protocol (`--protocol protobuf`): the same daemon, the same
//! plugin libraries, another wire.
//!
//! Kong's `pb_rpc.lua` runs a whole event on one connection: `cmd_handle_event`, then every
//! PDK call as a method frame and an argument frame answered by one result frame, then the
//! end of the loop. The handler here drives the event through the daemon's typed
//! operations exactly as the MsgPack:1 RPCs do (`handle_event`, then one `step` per
//! answer), so failing closed, the event budget, scoping and the metrics are the same; the
//! plugin's MessagePack PDK calls are transcoded on the way
//! ([`kong_rust_pluginserver_protocol::protobuf::transcode`]).
//!
//! What differs from MsgPack:1, and so here:
//! - no `serverPid`, nothing unsolicited: Kong would read any byte as a frame length;
//! - no error replies: closing the connection is the only signal, and Kong takes it as
//!   "restart the instance and retry", so it is used only for an unknown instance (and
//!   for a connection that cannot be read any more);
//! - a request is ended in a failed plugin's place with `kong.response.exit`, since the
//!   protocol has no `kong.response.error`;
//! - PDK calls outside the protocol's 74 functions fail in the plugin
//!   ([`OutsideProtobuf`], a gate the daemon installs for this protocol), never reach Kong
//!   (which would abort the event);
//! - instance ids fit an `int32` and are never 0.

mod connection;

pub use connection::serve;

pub use crate::daemon::OutsideProtobuf;
