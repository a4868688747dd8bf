//! What a [`Tx`](super::Tx) runs: SQL text or a prepared statement, their parameters,
//! and the types declared for a statement sent unnamed.

use tokio_postgres::Statement;
use tokio_postgres::types::{ToSql, Type};

use crate::connection::declared_type;
use crate::error::{Failure, TxError};

/// Something a [`Tx`] can run: SQL text (prepared once per connection and cached) or a
/// statement prepared with [`Tx::prepare`].
pub trait TxStatement: private::Sealed {
    #[doc(hidden)]
    fn as_query(&self) -> QueryRef<'_>;
}

/// What a [`TxStatement`] is, for the runtime.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum QueryRef<'a> {
    /// SQL text.
    Sql(&'a str),
    /// An already prepared statement.
    Prepared(&'a Statement),
}

impl TxStatement for str {
    fn as_query(&self) -> QueryRef<'_> {
        QueryRef::Sql(self)
    }
}

impl TxStatement for String {
    fn as_query(&self) -> QueryRef<'_> {
        QueryRef::Sql(self)
    }
}

impl TxStatement for Statement {
    fn as_query(&self) -> QueryRef<'_> {
        QueryRef::Prepared(self)
    }
}

mod private {
    pub trait Sealed {}
    impl Sealed for str {}
    impl Sealed for String {}
    impl Sealed for tokio_postgres::Statement {}
}

/// Query parameters, as tokio-postgres takes them.
pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// What a statement runs as.
pub(super) enum Target<'a> {
    /// A prepared (named) statement.
    Prepared(&'a Statement),
    /// SQL text sent unnamed, with its parameters' declared types.
    Unnamed(&'a str, &'a [(&'a (dyn ToSql + Sync), Type)]),
}

/// The parameters with the types to declare for an unnamed statement.
pub(super) fn declare_types<'p>(
    params: Params<'p>,
) -> Result<Vec<(&'p (dyn ToSql + Sync), Type)>, TxError> {
    params
        .iter()
        .enumerate()
        .map(|(i, &param)| match declared_type(param) {
            Some(ty) => Ok((param, ty)),
            None => Err(TxError::new(
                Failure::Database,
                format!(
                    "parameter ${} has a type that cannot be sent without a prepared \
                     statement (statement_cache(false)): cast it in the SQL (${}::your_type) \
                     and pass it as text",
                    i + 1,
                    i + 1
                ),
            )),
        })
        .collect()
}
