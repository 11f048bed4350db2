# py-hello: the benchmark twin of plugins/rust-hello for Kong's Python pluginserver
# (PyPI kong-pdk). Same logic: in `access`, read the `host` request header and set two
# response headers. Three PDK calls per request.
import os

Schema = ({"message": {"type": "string"}},)
version = "0.1.0"
priority = 1000


class Plugin(object):
    def __init__(self, config):
        self.message = config.get("message") or "hello"
        self.pid = str(os.getpid())

    def access(self, kong):
        # kong-pluginserver runs in Lua style by default: PDK calls return (value, err).
        host, _ = kong.request.get_header("host")
        kong.response.set_header(
            "x-hello-from-python", "Python says %s to %s" % (self.message, host or "")
        )
        kong.response.set_header("x-python-pid", self.pid)
