'use strict'
// js-hello: the benchmark twin of plugins/rust-hello for Kong's JavaScript pluginserver
// (npm kong-pdk). Same logic: in `access`, read the `host` request header and set two
// response headers. Three PDK calls per request.

class JsHello {
  constructor (config) {
    this.message = (config && config.message) || 'hello'
    this.pid = String(process.pid)
  }

  async access (kong) {
    const host = (await kong.request.getHeader('host')) || ''
    await kong.response.setHeader('x-hello-from-js', `JS says ${this.message} to ${host}`)
    await kong.response.setHeader('x-js-pid', this.pid)
  }
}

module.exports = {
  Plugin: JsHello,
  Name: 'js-hello',
  Schema: [{ message: { type: 'string' } }],
  Version: '0.1.0',
  Priority: 1000
}
