//! Configuration: a TOML file, `SUMU_*` environment variables and CLI flags,
//! in rising order of precedence, resolved into a validated [`Config`].
//!
//! One module per area, each owning its settings' type, defaults and checks:
//! `options` (every option as given, and how they merge), `listen`
//! (listeners, TLS, PROXY protocol), `auth` (token keys, the API key),
//! `limits` (per socket and per node), `aws` (the aws engine), `recovery`
//! (the recovery window). [`Config::resolve`] runs their steps in a fixed
//! order, so the first invalid option reported is always the same one.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

mod auth;
mod aws;
mod limits;
mod listen;
mod options;
mod recovery;

pub use auth::{AuthConfig, DEV_API_KEY};
pub(crate) use auth::{DEFAULT_JWKS_MIN_CACHE, DEFAULT_MAX_SUBJECT_BYTES};
pub use aws::{AwsConfig, ServiceEndpoints, DEFAULT_MAX_OUTPUT_BYTES_IN_FLIGHT};
pub use limits::{Limits, Network, SocketLimits, DEFAULT_ADDRESS_LIMITS_EXEMPT};
pub use listen::{TlsListen, TlsSource, DEV_TLS_LISTEN};
pub use options::{
    Cli, ClusterCommand, Command, ConfigError, EngineKind, LogFormat, Options, PresenceSource,
};
pub use recovery::{
    RecoveryConfig, DEFAULT_RECOVERY_MAX_BYTES, DEFAULT_RECOVERY_MAX_MESSAGES,
    DEFAULT_RECOVERY_WINDOW_AWS, DEFAULT_RECOVERY_WINDOW_MEMORY,
};

use options::{clean_list, secs};

/// The resolved configuration of a node.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The TLS listener, if any.
    pub tls: Option<TlsListen>,
    pub path: String,
    pub engine: EngineKind,
    pub node_id: String,
    pub workers: usize,
    pub dev: bool,
    /// SUMU's demo backend runs in process (`--dev`, memory engine).
    pub demo_backend: bool,
    pub api_key: Option<String>,
    pub log_format: LogFormat,
    pub log: String,
    pub auth: AuthConfig,
    pub limits: Limits,
    pub sockets: SocketLimits,
    /// Connections start with a PROXY protocol v2 header.
    pub proxy_protocol: bool,
    pub allowed_origins: Vec<String>,
    pub drain: Duration,
    pub presence_source: PresenceSource,
    pub recovery: RecoveryConfig,
    pub aws: AwsConfig,
}

impl Config {
    /// Reads the file named by `--config`/`SUMU_CONFIG` (if any) under the
    /// flags and environment, then resolves and validates.
    pub fn load(cli_config: Option<&Path>, options: Options) -> Result<Config, ConfigError> {
        let merged = match cli_config {
            Some(path) => options.over(Options::from_file(path)?),
            None => options,
        };
        Config::resolve(merged)
    }

    /// Applies the defaults to `o` and checks it, area by area.
    pub fn resolve(o: Options) -> Result<Config, ConfigError> {
        let dev = o.dev.unwrap_or(false);
        let listen::Listeners { listen, tls } = listen::resolve_listeners(&o, dev)?;
        check_node_id(&o)?;
        let path = resolve_path(&o)?;
        let limits = limits::resolve_limits(&o)?;
        let sockets = limits::resolve_sockets(&o)?;
        let api_key = auth::resolve_api_key(&o, dev);
        let auth = auth::resolve_auth(&o)?;
        let aws = aws::resolve_aws(&o, &limits)?;
        let engine = o.engine.unwrap_or(EngineKind::Memory);
        let recovery = recovery::resolve_recovery(&o, engine, &limits)?;
        Ok(Config {
            listen,
            tls,
            path,
            engine,
            demo_backend: dev && engine == EngineKind::Memory && o.demo_backend.unwrap_or(true),
            node_id: o.node_id.unwrap_or_else(random_node_id),
            workers: o
                .workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
                .max(1),
            dev,
            api_key,
            log_format: o.log_format.unwrap_or(LogFormat::Text),
            log: o.log.unwrap_or_else(|| "info".to_string()),
            auth,
            limits,
            sockets,
            proxy_protocol: o.proxy_protocol.unwrap_or(false),
            allowed_origins: clean_list(o.allowed_origins),
            drain: secs(o.drain_secs, Duration::from_secs(10)),
            presence_source: o.presence_source.unwrap_or(PresenceSource::Topic),
            recovery,
            aws,
        })
    }

    /// Serving needs a key source; `bootstrap` does not.
    pub fn require_keys(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        if !self.dev && a.jwks_uri.is_none() && a.jwks_file.is_none() && a.hs256_secret.is_none() {
            return Err(ConfigError::Invalid(
                "no token keys: give --jwks-uri, --jwks-file or --hs256-secret (or --dev)".into(),
            ));
        }
        Ok(())
    }
}

/// `--node-id`, when given, is a valid SQS queue name part.
fn check_node_id(o: &Options) -> Result<(), ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    if let Some(id) = &o.node_id {
        let ok = !id.is_empty()
            && id.len() <= 40
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return invalid(format!(
                "--node-id must be 1-40 of [A-Za-z0-9_-] (it names the node's SQS inbox): {id:?}"
            ));
        }
    }
    Ok(())
}

/// The WebSocket route (`--path`), checked.
fn resolve_path(o: &Options) -> Result<String, ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    let path = o.path.clone().unwrap_or_else(|| "/push".to_string());
    if !path.starts_with('/') || path.len() < 2 {
        return invalid(format!(
            "--path must start with '/' and name a route: {path:?}"
        ));
    }
    Ok(path)
}

fn random_node_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("n-{}", &id[..12])
}
#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn dev() -> Options {
        Options {
            dev: Some(true),
            ..Options::default()
        }
    }

    #[test]
    fn defaults_follow_api_gateway() {
        let c = Config::resolve(dev()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.path, "/push");
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(600));
        assert_eq!(c.limits.max_connection, Duration::from_secs(7200));
        assert_eq!(c.limits.max_frame_bytes, 32768);
        assert_eq!(c.limits.max_message_bytes, 131072);
        assert_eq!(c.api_key.as_deref(), Some(DEV_API_KEY));
        assert_eq!(c.aws.connections_table, "SumuConnections");
        assert_eq!(c.aws.cluster_table, "SumuCluster");
        assert!(c.auth.verify_expiration);
    }

    #[test]
    fn flags_beat_file_values() {
        let file: Options = toml::from_str(
            "listen = \"127.0.0.1:9000\"\nidle_timeout_secs = 5\njwt_audiences = [\"a\", \"b\"]\n",
        )
        .unwrap();
        let cli = Options {
            idle_timeout_secs: Some(7),
            ..dev()
        };
        let c = Config::resolve(cli.over(file)).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(7));
        assert_eq!(c.auth.audiences, vec!["a", "b"]);
    }

    #[test]
    fn close_codes_default_to_reconnectable_ones_and_refuse_reserved() {
        let c = Config::resolve(dev()).unwrap();
        assert_eq!(c.limits.drain_close_code, 1012);
        assert_eq!(c.limits.max_duration_close_code, 4000);
        for bad in [1004, 1005, 1006, 1015, 999, 2000, 5000] {
            let o = Options {
                drain_close_code: Some(bad),
                ..dev()
            };
            assert!(Config::resolve(o).is_err(), "{bad} accepted");
        }
        let o = Options {
            max_duration_close_code: Some(1001),
            ..dev()
        };
        assert_eq!(
            Config::resolve(o).unwrap().limits.max_duration_close_code,
            1001
        );
    }

    #[test]
    fn recovery_defaults_depend_on_the_engine_and_limits_are_checked() {
        let c = Config::resolve(dev()).unwrap();
        assert_eq!(c.recovery.window, DEFAULT_RECOVERY_WINDOW_MEMORY);
        assert!(c.recovery.enabled());
        assert_eq!(c.aws.history_table, "SumuHistory");
        let aws = Options {
            engine: Some(EngineKind::Aws),
            ..dev()
        };
        assert!(!Config::resolve(aws.clone()).unwrap().recovery.enabled());
        let on = Options {
            recovery_window_secs: Some(30),
            ..aws
        };
        assert_eq!(
            Config::resolve(on).unwrap().recovery.window,
            Duration::from_secs(30)
        );
        // A small outbound cap without --recovery-max-bytes: the default
        // follows it (half the cap), the node starts.
        let small = Config::resolve(Options {
            outbound_buffer_bytes: Some(512 * 1024),
            ..dev()
        })
        .unwrap();
        assert_eq!(small.recovery.max_bytes, 256 * 1024);
        for bad in [
            Options {
                recovery_max_bytes: Some(3 * 1024 * 1024),
                ..dev()
            },
            Options {
                outbound_buffer_bytes: Some(512 * 1024),
                recovery_max_bytes: Some(512 * 1024),
                ..dev()
            },
            Options {
                recovery_max_messages: Some(0),
                ..dev()
            },
        ] {
            assert!(Config::resolve(bad).is_err());
        }
    }

    #[test]
    fn refuses_dev_on_public_address_unless_forced() {
        let o = Options {
            listen: Some("0.0.0.0:8080".parse().unwrap()),
            ..dev()
        };
        assert!(Config::resolve(o.clone()).is_err());
        let o = Options {
            dev_allow_remote: Some(true),
            ..o
        };
        assert!(Config::resolve(o).is_ok());
    }

    #[test]
    fn refuses_missing_keys_and_bad_limits() {
        assert!(Config::resolve(Options::default())
            .unwrap()
            .require_keys()
            .is_err());
        let o = Options {
            max_frame_bytes: Some(70000),
            ..dev()
        };
        assert!(Config::resolve(o).is_err());
        let o = Options {
            hs256_secret: Some("s".into()),
            ..Options::default()
        };
        assert!(Config::resolve(o).unwrap().require_keys().is_ok());
    }

    #[test]
    fn socket_limits_default_generous_and_exempt_loopback() {
        let c = Config::resolve(dev()).unwrap();
        assert_eq!(c.sockets.max_sockets, None);
        assert_eq!(c.sockets.max_per_user, 100);
        let loopback = |ip: &str| {
            c.sockets
                .exempt
                .iter()
                .any(|n| n.contains(ip.parse().unwrap()))
        };
        assert!(loopback("127.0.0.1") && loopback("127.9.8.7") && loopback("::1"));
        assert!(loopback("::ffff:127.0.0.1"));
        assert!(!loopback("192.0.2.1") && !loopback("2001:db8::1"));
        let cli =
            Cli::try_parse_from(["sumu-node", "--dev", "--address-limits-exempt", ""]).unwrap();
        assert!(Config::resolve(cli.options)
            .unwrap()
            .sockets
            .exempt
            .is_empty());
        let o = Options {
            address_limits_exempt: Some(vec!["10.0.0.0/33".into()]),
            ..dev()
        };
        assert!(Config::resolve(o).is_err());
    }

    #[test]
    fn tls_options_are_validated() {
        assert_eq!(Config::resolve(dev()).unwrap().tls, None);
        let files = Options {
            tls_listen: Some("127.0.0.1:9443".parse().unwrap()),
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..dev()
        };
        let tls = Config::resolve(files.clone()).unwrap().tls.unwrap();
        assert_eq!(tls.listen.port(), 9443);
        assert_eq!(tls.watch, Duration::from_secs(5));
        assert_eq!(
            tls.source,
            TlsSource::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }
        );
        let refused = [
            Options {
                tls_key: None,
                ..files.clone()
            },
            Options {
                tls_listen: None,
                ..files.clone()
            },
            Options {
                dev_tls: Some(true),
                ..files.clone()
            },
            Options {
                tls_cert: None,
                tls_key: None,
                ..files.clone()
            },
            Options {
                dev_tls: Some(true),
                tls_listen: Some("0.0.0.0:8443".parse().unwrap()),
                ..dev()
            },
        ];
        for o in refused {
            assert!(
                matches!(Config::resolve(o.clone()), Err(ConfigError::Invalid(_))),
                "accepted {o:?}"
            );
        }
        let d = Config::resolve(Options {
            dev_tls: Some(true),
            tls_watch_secs: Some(0),
            ..dev()
        })
        .unwrap()
        .tls
        .unwrap();
        assert_eq!(
            (d.listen, d.source, d.watch),
            (DEV_TLS_LISTEN, TlsSource::Dev, Duration::ZERO)
        );
        let forced = Options {
            dev_tls: Some(true),
            dev_allow_remote: Some(true),
            tls_listen: Some("0.0.0.0:8443".parse().unwrap()),
            ..dev()
        };
        assert!(Config::resolve(forced).is_ok());
    }

    #[test]
    fn refuses_dev_on_a_public_tls_listener_with_real_files_unless_forced() {
        let public = Options {
            tls_listen: Some("0.0.0.0:8443".parse().unwrap()),
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..dev()
        };
        let refused = Config::resolve(public.clone()).unwrap_err().to_string();
        assert!(refused.contains("0.0.0.0:8443"), "{refused}");
        assert!(refused.contains("--dev-allow-remote"), "{refused}");
        // Without --dev nothing signs tokens: a public listener is fine.
        assert!(Config::resolve(Options {
            dev: None,
            ..public.clone()
        })
        .is_ok());
        assert!(Config::resolve(Options {
            dev_allow_remote: Some(true),
            ..public
        })
        .is_ok());
    }

    #[test]
    fn env_and_flags_parse() {
        let cli = Cli::try_parse_from([
            "sumu-node",
            "--dev",
            "--jwt-audiences",
            "x,y",
            "--verify-token-expiration=false",
        ])
        .unwrap();
        let c = Config::resolve(cli.options).unwrap();
        assert_eq!(c.auth.audiences, vec!["x", "y"]);
        assert!(!c.auth.verify_expiration);
        assert!(c.dev);
    }

    #[test]
    fn service_endpoints_parse_and_refuse_unknown_services() {
        let cli = Cli::try_parse_from([
            "sumu-node",
            "--dev",
            "--aws-endpoint",
            "http://127.0.0.1:1",
            "--aws-service-endpoints",
            "dynamodb=http://127.0.0.1:2, dynamodbstreams=http://127.0.0.1:2",
        ])
        .unwrap();
        let c = Config::resolve(cli.options).unwrap();
        assert_eq!(c.aws.endpoint.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(
            c.aws.service_endpoints,
            ServiceEndpoints {
                dynamodb: Some("http://127.0.0.1:2".into()),
                dynamodbstreams: Some("http://127.0.0.1:2".into()),
                ..ServiceEndpoints::default()
            }
        );
        for bad in ["s3=http://x", "sqs", "sqs=", "sqs=http://a,sqs=http://b"] {
            let o = Options {
                aws_service_endpoints: Some(bad.split(',').map(str::to_string).collect()),
                ..dev()
            };
            assert!(Config::resolve(o).is_err(), "{bad} must be refused");
        }
    }
}
