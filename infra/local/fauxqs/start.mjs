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
// fauxqs wakes every long poll of a queue when one message arrives: one of them takes it
// and the others return empty at once, where AWS keeps them waiting until their wait time
// ends. With several pollers per queue (sumu runs 2 per node on the notifications queue)
// that would multiply the ReceiveMessage calls the benchmark counts. So: wake one poller
// per arrival, none from inside a receive (dequeue() runs the timers, which would wake a
// second poller for the message being taken), and the next one after a receive that left
// messages behind.
const { SqsQueue } = await import(
  new URL("./node_modules/fauxqs/dist/sqs/sqsStore.js", import.meta.url)
);
SqsQueue.prototype.notifyWaiters = function () {
  if (this.sumuDequeuing) return;
  const waiter = this.pollWaiters.shift();
  if (waiter) {
    clearTimeout(waiter.timer);
    waiter.resolve();
  }
};
const dequeue = SqsQueue.prototype.dequeue;
SqsQueue.prototype.dequeue = function (...args) {
  this.sumuDequeuing = true;
  try {
    return dequeue.apply(this, args);
  } finally {
    this.sumuDequeuing = false;
    if (this.messages.length > 0) this.notifyWaiters();
  }
};
const { startFauxqs } = await import("fauxqs");
const port = parseInt(process.env.FAUXQS_PORT ?? "4566", 10);
await startFauxqs({ port, logger: false, host: "127.0.0.1" });
