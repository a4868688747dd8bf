//! `idempotency_key = <expr>`: a parameter or any expression over the parameters
//! (evaluated once per call), with a result type that can be stored.

use resilient_tx::{Db, Tx, TxError, retriable_tx};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Receipt {
    order_id: i64,
    total_cents: i64,
}

#[retriable_tx(idempotency_key = request_id, retries = 10)]
async fn place_order(tx: &mut Tx<'_>, request_id: String, item: &str) -> Result<i64, TxError> {
    let row = tx
        .query_one(
            "INSERT INTO orders(request_id, item) VALUES ($1, $2) RETURNING id",
            &[&request_id, &item],
        )
        .await?;
    Ok(row.get(0))
}

struct Payments {
    prefix: String,
}

impl Payments {
    #[retriable_tx(idempotency_key = format!("{}-{order_id}", self.prefix))]
    async fn pay(&self, order_id: i64, tx: &mut Tx<'_>) -> Result<Receipt, TxError> {
        let row = tx
            .query_one(
                "SELECT sum(cents) FROM lines WHERE order_id = $1",
                &[&order_id],
            )
            .await?;
        Ok(Receipt {
            order_id,
            total_cents: row.get(0),
        })
    }
}

async fn callers(db: &Db) -> Result<(), TxError> {
    let _: i64 = place_order(db, "req-1".to_owned(), "book").await?;
    let payments = Payments {
        prefix: "shop".to_owned(),
    };
    let _: Receipt = payments.pay(7, db).await?;
    Ok(())
}

fn main() {
    let _ = callers;
}
