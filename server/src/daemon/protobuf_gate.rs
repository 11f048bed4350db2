//! The PDK calls Kong's ProtoBuf:1 cannot carry, refused before they reach Kong: a daemon
//! serving that protocol installs this gate ([`Daemon::with_protocol`](super::Daemon::with_protocol)).

use kong_rust_pluginserver_protocol::protobuf::transcode;

use super::CallGate;

/// Refuses the PDK calls ProtoBuf:1 does not carry, naming the protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutsideProtobuf;

impl CallGate for OutsideProtobuf {
    fn refuse(&self, method: &str) -> Option<String> {
        (!transcode::is_carried(method)).then(|| transcode::not_in_protocol().0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_protocols_functions_pass_the_gate() {
        let gate = OutsideProtobuf;
        assert_eq!(gate.refuse("kong.request.get_header"), None);
        assert_eq!(gate.refuse("kong.request.get_query_arg"), None);
        for method in [
            "kong.response.error",
            "kong.log.emerg",
            "kong.plugin.get_id",
        ] {
            let reason = gate.refuse(method).expect("refused");
            assert!(reason.contains("ProtoBuf:1"), "{reason}");
        }
    }
}
