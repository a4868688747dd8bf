//! The PostgreSQL type to declare for a parameter sent without a prepared statement.
//!
//! An unnamed statement is parsed, bound and executed in one flight, so the server
//! cannot tell the client its parameter types first: the client declares them. The
//! Rust value decides, as it would with a prepared statement (where a value of the
//! wrong type fails on the client anyway): the first type in a fixed list that the
//! value's `ToSql` accepts. The server casts implicitly where the column's type
//! differs (an `int4` value for an `int8` column, `text` for `varchar`).

use tokio_postgres::types::{ToSql, Type};

/// Tried in order; the first a value accepts is declared. Wider or more common types
/// come first where a value accepts several (`text` before `varchar` and `name`,
/// `timestamptz` before `timestamp`, `jsonb` before `json`).
const CANDIDATES: &[Type] = &[
    Type::BOOL,
    Type::INT8,
    Type::INT4,
    Type::INT2,
    Type::CHAR,
    Type::FLOAT8,
    Type::FLOAT4,
    Type::NUMERIC,
    Type::OID,
    Type::TEXT,
    Type::BYTEA,
    Type::JSONB,
    Type::JSON,
    Type::UUID,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMP,
    Type::DATE,
    Type::TIME,
    Type::INTERVAL,
    Type::INET,
    Type::MACADDR,
    Type::BOOL_ARRAY,
    Type::INT8_ARRAY,
    Type::INT4_ARRAY,
    Type::INT2_ARRAY,
    Type::FLOAT8_ARRAY,
    Type::FLOAT4_ARRAY,
    Type::NUMERIC_ARRAY,
    Type::TEXT_ARRAY,
    Type::BYTEA_ARRAY,
    Type::JSONB_ARRAY,
    Type::UUID_ARRAY,
    Type::TIMESTAMPTZ_ARRAY,
    Type::TIMESTAMP_ARRAY,
    Type::DATE_ARRAY,
];

/// The type to declare for `value`, or `None` when no built-in type fits (a custom
/// enum or composite type, whose oid only a prepared statement can learn).
pub(crate) fn declared_type(value: &(dyn ToSql + Sync)) -> Option<Type> {
    CANDIDATES.iter().find(|ty| value.accepts_dyn(ty)).cloned()
}

/// `accepts` of a `dyn ToSql`: tokio-postgres' `accepts` takes no `self`, so it
/// cannot be called through a trait object; encoding a value as the type tells the
/// same (a wrong type fails with `WrongType` before anything is written).
trait AcceptsDyn {
    fn accepts_dyn(&self, ty: &Type) -> bool;
}

impl AcceptsDyn for dyn ToSql + Sync + '_ {
    fn accepts_dyn(&self, ty: &Type) -> bool {
        let mut buf = bytes::BytesMut::new();
        self.to_sql_checked(ty, &mut buf).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(value: &(dyn ToSql + Sync)) -> Option<Type> {
        declared_type(value)
    }

    #[test]
    fn common_rust_values_get_their_natural_type() {
        assert_eq!(declared(&true), Some(Type::BOOL));
        assert_eq!(declared(&7i64), Some(Type::INT8));
        assert_eq!(declared(&7i32), Some(Type::INT4));
        assert_eq!(declared(&7i16), Some(Type::INT2));
        assert_eq!(declared(&1.5f64), Some(Type::FLOAT8));
        assert_eq!(declared(&"alpha"), Some(Type::TEXT));
        assert_eq!(declared(&String::from("alpha")), Some(Type::TEXT));
        assert_eq!(declared(&vec![1u8, 2]), Some(Type::BYTEA));
        assert_eq!(declared(&vec![1i64, 2]), Some(Type::INT8_ARRAY));
        assert_eq!(declared(&vec!["a", "b"]), Some(Type::TEXT_ARRAY));
        assert_eq!(
            declared(&std::time::SystemTime::now()),
            Some(Type::TIMESTAMPTZ)
        );
    }

    #[test]
    fn a_null_takes_the_type_of_its_option() {
        assert_eq!(declared(&None::<i64>), Some(Type::INT8));
        assert_eq!(declared(&None::<&str>), Some(Type::TEXT));
    }
}
