//! By-value parameters (cloned per attempt), `&mut` parameters (reborrowed), patterns,
//! a parameter already called `db`, and the transaction in any position.

use resilient_tx::{Db, Tx, TxError, retriable_tx};

#[derive(Clone)]
struct Filter {
    name: String,
    limit: i64,
}

#[retriable_tx]
#[expect(clippy::too_many_arguments)]
async fn search(
    (from, to): (i64, i64),
    mut page: u32,
    _: std::marker::PhantomData<u8>,
    found: &mut Vec<String>,
    tx: &mut Tx<'_>,
    Filter { name, limit }: Filter,
    &offset: &i64,
    tags: Vec<String>,
) -> Result<u32, TxError> {
    page += 1;
    let rows = tx
        .query(
            "SELECT name FROM servers WHERE id BETWEEN $1 AND $2 AND name = $3 LIMIT $4 OFFSET $5",
            &[&from, &to, &name, &limit, &offset],
        )
        .await?;
    found.extend(rows.iter().map(|row| row.get::<_, String>(0)));
    found.extend(tags);
    Ok(page)
}

#[retriable_tx]
async fn named_db(db: String, tx: &mut Tx<'_>) -> Result<String, TxError> {
    tx.execute("SELECT 1", &[]).await?;
    Ok(db)
}

async fn callers(db: &Db) -> Result<(), TxError> {
    let mut found = Vec::new();
    let filter = Filter {
        name: "alpha".into(),
        limit: 10,
    };
    let _: u32 = search(
        (1, 9),
        0,
        std::marker::PhantomData,
        &mut found,
        db,
        filter,
        &0,
        vec![],
    )
    .await?;
    let _: String = named_db("main".into(), db).await?;
    Ok(())
}

fn main() {
    let _ = callers;
}
