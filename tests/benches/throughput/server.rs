//! A server as the measurements see it: its postmaster (for CPU time), its WAL
//! position, and what the runtime's own tables weigh on it after a run. Everything
//! here goes through the kit's admin connection (the Unix socket), outside the
//! proxies and outside the timed part of a round.

use resilient_tx_testkit::PgCluster;
use tokio_postgres::Client;

use crate::cpu::CpuTime;

/// The tables every contender works on: a counter per task, and a log the write
/// transaction appends to.
const SCHEMA: &str = "
    CREATE TABLE bench_counters(id int PRIMARY KEY, n bigint NOT NULL);
    INSERT INTO bench_counters SELECT g, 0 FROM generate_series(1, 64) g;
    CREATE TABLE bench_log(id bigserial PRIMARY KEY, counter int, n bigint);";

/// The schema of the runtime's own tables (commit markers, idempotency keys).
const RUNTIME_SCHEMA: &str = "resilient_tx";

/// One server the contenders run against.
pub struct Server {
    /// Names the server in the tables' footnotes.
    pub name: &'static str,
    postmaster: u32,
    admin: Client,
}

/// One of the runtime's tables after a run.
pub struct TableSize {
    pub name: String,
    pub rows: i64,
    /// `pg_total_relation_size`: heap, indexes and TOAST.
    pub bytes: i64,
}

impl Server {
    /// The running `cluster`, with the benchmark's tables created on it.
    pub async fn new(name: &'static str, cluster: &PgCluster) -> Server {
        let admin = cluster.admin().await.expect("admin connection");
        admin.batch_execute(SCHEMA).await.expect("schema");
        Server {
            name,
            postmaster: cluster.server_pid().expect("the server runs"),
            admin,
        }
    }

    /// CPU time used so far by this process and by this server.
    pub fn cpu(&self) -> Option<CpuTime> {
        CpuTime::now(self.postmaster)
    }

    /// Bytes of WAL the server has written since it was created (`pg_current_wal_lsn`
    /// as an offset from the start).
    pub async fn wal_position(&self) -> i64 {
        self.admin
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
                &[],
            )
            .await
            .expect("WAL position")
            .get(0)
    }

    /// Client connections over TCP: (encrypted, not encrypted).
    pub async fn tcp_clients_by_encryption(&self) -> (i64, i64) {
        let row = self
            .admin
            .query_one(
                "SELECT count(*) FILTER (WHERE ssl), count(*) FILTER (WHERE NOT ssl) \
                 FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
                 WHERE backend_type = 'client backend' AND client_addr IS NOT NULL",
                &[],
            )
            .await
            .expect("connections by encryption");
        (row.get(0), row.get(1))
    }

    /// The runtime's tables on this server, with their rows and total size.
    pub async fn runtime_tables(&self) -> Vec<TableSize> {
        let tables = self
            .admin
            .query(
                "SELECT c.oid::regclass::text, pg_total_relation_size(c.oid) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
                &[&RUNTIME_SCHEMA],
            )
            .await
            .expect("the runtime's tables");
        let mut sizes = Vec::with_capacity(tables.len());
        for table in tables {
            let name: String = table.get(0);
            // `regclass::text` quotes the name where it needs quoting.
            let rows: i64 = self
                .admin
                .query_one(&format!("SELECT count(*) FROM {name}"), &[])
                .await
                .expect("rows")
                .get(0);
            sizes.push(TableSize {
                name,
                rows,
                bytes: table.get(1),
            });
        }
        sizes
    }
}
