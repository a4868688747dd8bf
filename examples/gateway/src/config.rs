//! The gateway's settings, read from the environment or built in code (tests, or a
//! program that embeds the gateway).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Port the gateway listens on when `PORT` is not set.
pub const DEFAULT_PORT: u16 = 8080;

/// Retries of one call when `RETRIES` is not set (the runtime's default).
pub const DEFAULT_RETRIES: u32 = 5;

/// Why a configuration without a database URL is refused when the gateway is built
/// without the `local-db` feature: what to set instead.
#[cfg_attr(feature = "local-db", allow(dead_code))]
pub(crate) const MISSING_DATABASE_URL: &str = "DATABASE_URL is not set: set DATABASE_URL to \
    the database to use and GATEWAY_TOKEN to the bearer token clients must send (e.g. \
    DATABASE_URL='postgres://app:secret@db1:5432,db2:5432/app?target_session_attrs=read-write' \
    GATEWAY_TOKEN=change-me), or build with `--features local-db` to get a throwaway local \
    PostgreSQL server";

/// Everything [`crate::serve`] needs to start the gateway.
///
/// `Debug` hides the token and the database URL (which may carry a password).
#[derive(Clone)]
pub struct Config {
    /// libpq URI or key=value string; several hosts, `target_session_attrs` and libpq's
    /// TLS parameters (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`) are understood.
    /// `None` starts a throwaway local PostgreSQL server for the process's
    /// lifetime with the `local-db` feature, and is refused without it.
    pub database_url: Option<String>,
    /// A read replica (libpq URI or key=value, several hosts allowed) that serves the
    /// read-only routes; they fall back to the primary while it is unreachable, and a
    /// request asks for read-your-writes with `Consistency: strong`. `None`: every read
    /// goes to the primary.
    pub database_replica_url: Option<String>,
    /// The bearer token every `/api` request must present. `None` is allowed only with
    /// a throwaway database, for which a random development token is generated.
    pub token: Option<String>,
    /// Address and port to listen on; port 0 picks any free port.
    pub listen: SocketAddr,
    /// Connection pool sizing and waiting.
    pub pool: PoolSettings,
    /// Per-attempt timeout of every transaction (`SET LOCAL statement_timeout` plus a
    /// client-side timer); `None` leaves attempts bounded by the deadline alone.
    pub statement_timeout: Option<Duration>,
    /// Total time one transactional call may spend on attempts and backoff.
    pub deadline: Duration,
    /// Most retries of one call after its first attempt; the deadline bounds them too.
    pub retries: u32,
    /// `application_name` of the gateway's database connections, unless the URL sets
    /// one. Operators (and tests) find the gateway's backends by it.
    pub application_name: String,
    /// Serve `GET /metrics` (behind the bearer token), installing the Prometheus
    /// recorder as the process's global one if no gateway of the process did yet.
    /// Off for a program that embeds the gateway and installs a recorder of its own.
    pub metrics: bool,
    /// Whether statements are prepared once per connection and reused (the default).
    /// `false` behind a pooler in transaction mode (PgBouncer before 1.21), where
    /// named prepared statements do not follow a client from one transaction to the
    /// next: every statement is then sent unnamed.
    pub statement_cache: bool,
}

/// Pool sizing: a few connections kept warm, more opened under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Idle connections kept open ahead of demand.
    pub min_idle: u32,
    /// Most connections the pool opens.
    pub max_size: u32,
    /// Longest wait for a free connection before a request gets `pool_exhausted`
    /// (or `database_unavailable` when the database cannot be reached).
    pub pool_timeout: Duration,
    /// Bound on opening one connection (TCP, startup, authentication).
    pub connect_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            min_idle: 5,
            max_size: 15,
            pool_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// An environment variable that is set but cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Production defaults for a gateway on `database_url` with `token`: port 8080 on
    /// all interfaces, pool 5 kept / 15 max, 30 s pool timeout, 5 s per attempt, 30 s
    /// deadline.
    pub fn new(database_url: impl Into<String>, token: impl Into<String>) -> Self {
        Config {
            database_url: Some(database_url.into()),
            token: Some(token.into()),
            ..Config::defaults()
        }
    }

    fn defaults() -> Self {
        Config {
            database_url: None,
            database_replica_url: None,
            token: None,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
            pool: PoolSettings::default(),
            statement_timeout: Some(Duration::from_secs(5)),
            deadline: Duration::from_secs(30),
            retries: DEFAULT_RETRIES,
            application_name: "gateway".to_owned(),
            metrics: true,
            statement_cache: true,
        }
    }

    /// Reads the settings from the process environment; see [`Config::from_vars`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Config::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `var` (the environment, or a map in tests).
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `DATABASE_URL` | database to use | required; a throwaway local server with the `local-db` feature |
    /// | `DATABASE_REPLICA_URL` | read replica for the read-only routes | none: reads use the primary |
    /// | `GATEWAY_TOKEN` | bearer token for `/api` | required with `DATABASE_URL` |
    /// | `HOST` | address to listen on | `0.0.0.0` |
    /// | `PORT` | port to listen on (0: any) | 8080 |
    /// | `POOL_MIN_IDLE` / `POOL_MAX_SIZE` | pool size kept / most | 5 / 15 |
    /// | `POOL_TIMEOUT_MS` | wait for a free connection | 30000 |
    /// | `CONNECT_TIMEOUT_MS` | bound on one connect | 3000 |
    /// | `STATEMENT_TIMEOUT_MS` | per-attempt timeout (0: none) | 5000 |
    /// | `DEADLINE_MS` | total budget of one call | 30000 |
    /// | `RETRIES` | most retries of one call (the deadline bounds them too) | 5 |
    /// | `APPLICATION_NAME` | `application_name` of the connections | `gateway` |
    /// | `METRICS` | `on` serves `GET /metrics`, `off` does not | `on` |
    /// | `DATABASE_STATEMENT_CACHE` | `on`, or `off` behind PgBouncer in transaction mode | `on` |
    ///
    /// Empty values count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let mut config = Config::defaults();
        config.database_url = var("DATABASE_URL");
        config.database_replica_url = var("DATABASE_REPLICA_URL");
        config.token = var("GATEWAY_TOKEN");
        if config.database_url.is_some() && config.token.is_none() {
            return Err(ConfigError(
                "GATEWAY_TOKEN is required when DATABASE_URL is set (a development token is \
                 generated only for the throwaway local database)"
                    .to_owned(),
            ));
        }
        if let Some(host) = var("HOST") {
            let ip = host
                .trim()
                .parse::<IpAddr>()
                .map_err(|_| ConfigError(format!("HOST must be an IP address, got {host:?}")))?;
            config.listen.set_ip(ip);
        }
        if let Some(port) = parse::<u16>(&var, "PORT")? {
            config.listen.set_port(port);
        }
        if let Some(min_idle) = parse::<u32>(&var, "POOL_MIN_IDLE")? {
            config.pool.min_idle = min_idle;
        }
        if let Some(max_size) = parse::<u32>(&var, "POOL_MAX_SIZE")? {
            config.pool.max_size = max_size;
        }
        if let Some(timeout) = millis(&var, "POOL_TIMEOUT_MS")? {
            config.pool.pool_timeout = timeout;
        }
        if let Some(timeout) = millis(&var, "CONNECT_TIMEOUT_MS")? {
            config.pool.connect_timeout = timeout;
        }
        if let Some(timeout) = parse::<u64>(&var, "STATEMENT_TIMEOUT_MS")? {
            // 0 switches the per-attempt timeout off rather than making every
            // statement fail at once.
            config.statement_timeout = (timeout > 0).then(|| Duration::from_millis(timeout));
        }
        if let Some(deadline) = millis(&var, "DEADLINE_MS")? {
            config.deadline = deadline;
        }
        if let Some(retries) = parse::<u32>(&var, "RETRIES")? {
            config.retries = retries;
        }
        if let Some(name) = var("APPLICATION_NAME") {
            config.application_name = name;
        }
        if let Some(metrics) = var("METRICS") {
            config.metrics = switch("METRICS", &metrics)?;
        }
        if let Some(cache) = var("DATABASE_STATEMENT_CACHE") {
            // `off` is what PgBouncer in transaction mode needs: say so.
            config.statement_cache = switch("DATABASE_STATEMENT_CACHE", &cache).map_err(|e| {
                ConfigError(format!(
                    "{} (off behind PgBouncer in transaction mode)",
                    e.0
                ))
            })?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the combinations the environment parser cannot see one variable at a time.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.pool.max_size == 0 {
            return Err(ConfigError("POOL_MAX_SIZE must be at least 1".to_owned()));
        }
        if self.pool.min_idle > self.pool.max_size {
            return Err(ConfigError(format!(
                "POOL_MIN_IDLE ({}) cannot exceed POOL_MAX_SIZE ({})",
                self.pool.min_idle, self.pool.max_size
            )));
        }
        if self.deadline.is_zero() {
            return Err(ConfigError("DEADLINE_MS must be above zero".to_owned()));
        }
        if self.database_replica_url.is_some() && self.database_url.is_none() {
            return Err(ConfigError(
                "DATABASE_REPLICA_URL needs DATABASE_URL (the throwaway local database has no \
                 replica)"
                    .to_owned(),
            ));
        }
        // Last, so the other mistakes are named first.
        #[cfg(not(feature = "local-db"))]
        if self.database_url.is_none() {
            return Err(ConfigError(MISSING_DATABASE_URL.to_owned()));
        }
        Ok(())
    }
}

/// Parses a variable as a number; unset is `None`, anything else but a number an error.
fn parse<T: std::str::FromStr>(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<T>, ConfigError> {
    var(name)
        .map(|value| {
            value.trim().parse::<T>().map_err(|_| {
                ConfigError(format!(
                    "{name} must be a non-negative whole number, got {value:?}"
                ))
            })
        })
        .transpose()
}

/// `on` or `off` (also `true`/`false`, `1`/`0`), in any case.
fn switch(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(ConfigError(format!(
            "{name} must be `on` or `off`, got {value:?}"
        ))),
    }
}

/// A duration in milliseconds that must be above zero.
fn millis(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<Duration>, ConfigError> {
    match parse::<u64>(var, name)? {
        Some(0) => Err(ConfigError(format!("{name} must be above zero"))),
        other => Ok(other.map(Duration::from_millis)),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |set: bool| if set { "<set>" } else { "<unset>" };
        f.debug_struct("Config")
            .field("database_url", &redacted(self.database_url.is_some()))
            .field(
                "database_replica_url",
                &redacted(self.database_replica_url.is_some()),
            )
            .field("token", &redacted(self.token.is_some()))
            .field("listen", &self.listen)
            .field("pool", &self.pool)
            .field("statement_timeout", &self.statement_timeout)
            .field("deadline", &self.deadline)
            .field("retries", &self.retries)
            .field("application_name", &self.application_name)
            .field("metrics", &self.metrics)
            .field("statement_cache", &self.statement_cache)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_vars(|name| map.get(name).cloned())
    }

    #[cfg(feature = "local-db")]
    #[test]
    fn nothing_set_means_a_throwaway_database_and_the_documented_defaults() {
        let config = from(&[]).expect("valid");
        assert_eq!(config.database_url, None);
        assert_eq!(config.token, None);
        assert_documented_defaults(&config);
    }

    #[cfg(not(feature = "local-db"))]
    #[test]
    fn without_local_db_a_missing_database_url_says_what_to_set() {
        let error = from(&[]).expect_err("no database");
        for named in ["DATABASE_URL", "GATEWAY_TOKEN", "--features local-db"] {
            assert!(error.0.contains(named), "{error}");
        }
    }

    #[test]
    fn a_database_url_alone_gets_the_documented_defaults() {
        let config = from(&[
            ("DATABASE_URL", "postgres://db/app"),
            ("GATEWAY_TOKEN", "t"),
        ])
        .expect("valid");
        assert_documented_defaults(&config);
    }

    fn assert_documented_defaults(config: &Config) {
        assert_eq!(config.listen.port(), DEFAULT_PORT);
        assert_eq!(config.pool, PoolSettings::default());
        assert_eq!(config.pool.min_idle, 5);
        assert_eq!(config.pool.max_size, 15);
        assert_eq!(config.pool.pool_timeout, Duration::from_secs(30));
        assert_eq!(config.statement_timeout, Some(Duration::from_secs(5)));
        assert_eq!(config.deadline, Duration::from_secs(30));
        assert_eq!(config.database_replica_url, None);
        assert_eq!(config.retries, DEFAULT_RETRIES);
        assert_eq!(config.application_name, "gateway");
        assert!(config.metrics);
        assert!(config.statement_cache);
    }

    #[test]
    fn every_variable_is_read() {
        let config = from(&[
            (
                "DATABASE_URL",
                "postgres://app@db1,db2/app?target_session_attrs=read-write",
            ),
            ("GATEWAY_TOKEN", "secret"),
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("POOL_MIN_IDLE", "2"),
            ("POOL_MAX_SIZE", "4"),
            ("POOL_TIMEOUT_MS", "1500"),
            ("CONNECT_TIMEOUT_MS", "700"),
            ("STATEMENT_TIMEOUT_MS", "0"),
            ("DEADLINE_MS", "9000"),
            ("APPLICATION_NAME", "gw-test"),
            ("DATABASE_REPLICA_URL", "postgres://app@replica/app"),
            ("RETRIES", "12"),
            ("METRICS", "off"),
            ("DATABASE_STATEMENT_CACHE", "off"),
        ])
        .expect("valid");
        assert!(!config.metrics);
        assert!(!config.statement_cache);
        assert_eq!(
            config.database_replica_url.as_deref(),
            Some("postgres://app@replica/app")
        );
        assert_eq!(config.retries, 12);
        assert_eq!(config.listen, "127.0.0.1:0".parse().expect("addr"));
        assert_eq!(config.pool.min_idle, 2);
        assert_eq!(config.pool.max_size, 4);
        assert_eq!(config.pool.pool_timeout, Duration::from_millis(1500));
        assert_eq!(config.pool.connect_timeout, Duration::from_millis(700));
        assert_eq!(config.statement_timeout, None, "0 switches it off");
        assert_eq!(config.deadline, Duration::from_secs(9));
        assert_eq!(config.application_name, "gw-test");
    }

    #[test]
    fn a_database_url_without_a_token_is_refused() {
        let error = from(&[("DATABASE_URL", "postgres://db/app")]).expect_err("no token");
        assert!(error.0.contains("GATEWAY_TOKEN"), "{error}");
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        for (name, value) in [
            ("PORT", "http"),
            ("POOL_TIMEOUT_MS", "-1"),
            ("DEADLINE_MS", "0"),
            ("METRICS", "maybe"),
        ] {
            let error = from(&[(name, value)]).expect_err(name);
            assert!(error.0.contains(name), "{error}");
        }
        let error = from(&[("POOL_MIN_IDLE", "20")]).expect_err("min above max");
        assert!(error.0.contains("POOL_MIN_IDLE"), "{error}");
        let error = from(&[
            ("DATABASE_URL", "postgres://db/app"),
            ("GATEWAY_TOKEN", "t"),
            ("DATABASE_STATEMENT_CACHE", "sometimes"),
        ])
        .expect_err("on or off");
        assert!(error.0.contains("DATABASE_STATEMENT_CACHE"), "{error}");
        let error =
            from(&[("DATABASE_REPLICA_URL", "postgres://r/app")]).expect_err("replica alone");
        assert!(error.0.contains("DATABASE_REPLICA_URL"), "{error}");
    }

    #[test]
    fn debug_hides_the_secrets() {
        let mut config = Config::new("postgres://app:hunter2@db/app", "tok3n");
        config.database_replica_url = Some("postgres://app:hunter3@replica/app".to_owned());
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3") && !shown.contains("tok3n"),
            "{shown}"
        );
    }
}
