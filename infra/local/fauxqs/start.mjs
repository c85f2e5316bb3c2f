// infra/local/fauxqs/start.mjs: fauxqs on 127.0.0.1:$FAUXQS_PORT, request log off. Its own
// startFauxqs listens on 0.0.0.0; this binds the loopback address only (a listener of the
// local fleet is never reachable from elsewhere).
import net from "node:net";
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args[0] && typeof args[0] === "object" && args[0].host === "0.0.0.0") {
    args[0] = { ...args[0], host: "127.0.0.1" };
  }
  return listen.apply(this, args);
};
const { startFauxqs } = await import("fauxqs");
const port = parseInt(process.env.FAUXQS_PORT ?? "4566", 10);
await startFauxqs({ port, logger: false, host: "127.0.0.1" });
