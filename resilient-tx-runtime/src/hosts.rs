//! One connection config per host of a multi-host URL, so that each host gets its own
//! connect bound as libpq gives it. tokio-postgres tries the hosts in order under one
//! future: a silent first host (a partitioned old primary) would use up the whole
//! bound and the next host would never be tried.

use tokio_postgres::Config;
use tokio_postgres::config::Host;

/// `config` split into one config per host, in the URL's order. A single-host config
/// comes back as it is.
pub(crate) fn per_host(config: &Config) -> Vec<Config> {
    let hosts = config.get_hosts();
    if hosts.len() <= 1 {
        return vec![config.clone()];
    }
    let ports = config.get_ports();
    let addrs = config.get_hostaddrs();
    hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let mut single = without_hosts(config);
            match host {
                Host::Tcp(name) => single.host(name),
                Host::Unix(path) => single.host_path(path),
            };
            // libpq: one port for all hosts, or one per host.
            if let Some(port) = ports
                .get(i)
                .or_else(|| (ports.len() == 1).then(|| &ports[0]))
            {
                single.port(*port);
            }
            if let Some(addr) = addrs.get(i) {
                single.hostaddr(*addr);
            }
            single
        })
        .collect()
}

/// A copy of every setting but the hosts, ports and addresses.
fn without_hosts(config: &Config) -> Config {
    let mut copy = Config::new();
    if let Some(user) = config.get_user() {
        copy.user(user);
    }
    if let Some(password) = config.get_password() {
        copy.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        copy.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        copy.options(options);
    }
    if let Some(name) = config.get_application_name() {
        copy.application_name(name);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        copy.connect_timeout(*timeout);
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        copy.tcp_user_timeout(*timeout);
    }
    copy.ssl_mode(config.get_ssl_mode())
        .ssl_negotiation(config.get_ssl_negotiation())
        .keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle())
        .target_session_attrs(config.get_target_session_attrs())
        .channel_binding(config.get_channel_binding());
    if let Some(interval) = config.get_keepalives_interval() {
        copy.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        copy.keepalives_retries(retries);
    }
    copy
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use tokio_postgres::config::TargetSessionAttrs;

    use super::*;

    #[test]
    fn each_host_keeps_its_port_and_every_other_setting() {
        let config = Config::from_str(
            "postgres://app:pw@db1:5433,db2:5434/shop?target_session_attrs=read-write&application_name=x",
        )
        .expect("url");
        let split = per_host(&config);
        assert_eq!(split.len(), 2);
        for (single, (host, port)) in split.iter().zip([("db1", 5433), ("db2", 5434)]) {
            assert_eq!(single.get_hosts(), &[Host::Tcp(host.into())]);
            assert_eq!(single.get_ports(), &[port]);
            assert_eq!(single.get_user(), Some("app"));
            assert_eq!(single.get_password(), Some(&b"pw"[..]));
            assert_eq!(single.get_dbname(), Some("shop"));
            assert_eq!(single.get_application_name(), Some("x"));
            assert_eq!(
                single.get_target_session_attrs(),
                TargetSessionAttrs::ReadWrite
            );
        }
    }

    #[test]
    fn one_port_serves_every_host_and_one_host_is_left_alone() {
        let config = Config::from_str("host=a,b port=6000 user=u").expect("key=value");
        let split = per_host(&config);
        assert_eq!(
            split
                .iter()
                .map(|c| c.get_ports().to_vec())
                .collect::<Vec<_>>(),
            [[6000], [6000]]
        );
        let single = Config::from_str("postgres://u@only:7000/db").expect("url");
        assert_eq!(per_host(&single).len(), 1);
    }
}
