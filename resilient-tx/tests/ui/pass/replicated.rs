//! `replicated = "…"`: the call returns once a standby has the commit; with a key, a
//! retry after `NotReplicated` returns the stored result once one has it.

use resilient_tx::{Db, ErrorKind, Tx, TxError, retriable_tx};

#[retriable_tx(replicated = "2s")]
async fn add_server(tx: &mut Tx<'_>, name: &str) -> Result<i64, TxError> {
    let row = tx
        .query_one("INSERT INTO servers(name) VALUES ($1) RETURNING id", &[&name])
        .await?;
    Ok(row.get(0))
}

#[retriable_tx(idempotency_key = request_id, replicated = "500ms", deadline = "10s")]
async fn place_order(tx: &mut Tx<'_>, request_id: &str, item: &str) -> Result<i64, TxError> {
    let row = tx
        .query_one(
            "INSERT INTO orders(request_id, item) VALUES ($1, $2) RETURNING id",
            &[&request_id, &item],
        )
        .await?;
    Ok(row.get(0))
}

async fn callers(db: &Db) -> Result<(), TxError> {
    let _: i64 = add_server(db, "alpha").await?;
    match place_order(db, "req-1", "book").await {
        Err(error) if error.kind() == ErrorKind::NotReplicated => {
            // Committed on the primary only: the same key later returns the order.
            let _: i64 = place_order(db, "req-1", "book").await?;
        }
        other => {
            other?;
        }
    }
    Ok(())
}

fn assert_send<F: Send>(_: &F) {}

fn main() {
    // Type-checks the calls and that the futures can be spawned; nothing is run.
    let _ = |db: &'static Db| {
        let call = callers(db);
        assert_send(&call);
        call
    };
}
