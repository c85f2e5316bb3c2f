//! A server process that is not `sumu-node` (the reference peers the load
//! tester is checked against: `sumu-peer-min`, the Node `ws` peer), on a
//! loopback port chosen before it starts (`{port}` in its arguments), ready
//! once `GET /readyz` answers 200; killed on drop. A `sumu-node` is started
//! with [`crate::node::Node`] instead (it binds port 0 and says where).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, http_status, scratch};

/// How long a server may take to answer `/readyz`.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A server child process, killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Server {
    /// Starts `program args...` (`{port}` replaced by a free port) and
    /// waits until `GET /readyz` is 200.
    pub fn start(program: &Path, args: &[&str], name: &str) -> Server {
        Server::start_with_env(program, args, &[], name)
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env(
        program: &Path,
        args: &[&str],
        env: &[(String, String)],
        name: &str,
    ) -> Server {
        crate::may_start(&format!("{}", program.display()));
        let port = free_port();
        let log = scratch(name).join("server.log");
        let log_file = std::fs::File::create(&log).expect("create log");
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let child = Command::new(program)
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Server { child, port, log }.ready(program)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn ready(mut self, program: &Path) -> Server {
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if http_status(self.port, "/readyz") == Some(200) {
                return self;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status}: {}",
                    program.display(),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} not ready within {READY_WITHIN:?}: {}",
            program.display(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
