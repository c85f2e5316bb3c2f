//! The fast set: tests that start no process. They serve nodes in this
//! process (`sumu_testkit::InProcessNode`, over `sumu_node::server::serve`
//! on the memory engine) or need no node at all; `infra/local/test-fast`
//! runs exactly these (with `layers`, which reads the sources) and the unit
//! tests, with `SUMU_TEST_TIER=fast` set so that any helper that would start
//! a process panics instead. A test that needs a real process (a signal, an
//! exit code, the command line, RSS, TLS files, the emulator, HAProxy) lives
//! beside this module, in `node/tests/it/<area>.rs`.

mod auth;
mod docs;
pub(crate) mod gateway;
pub(crate) mod hostile;
mod in_process;
pub(crate) mod limits;
