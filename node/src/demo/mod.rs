//! SUMU's demo backend, on the node's side of the wire: its pure logic
//! ([`logic`]: what a backend answers to each message, as notification
//! requests) and the in-process runner of `--dev` on the memory engine.
//! The standalone `sumu-demo-backend` binary runs the same logic against
//! SNS/SQS. Invariant: the logic does no I/O and knows nothing of the node,
//! only the wire contract (`sumu_shared`); it is public for the binary.

pub mod logic;

mod in_process;

pub(crate) use in_process::spawn;
