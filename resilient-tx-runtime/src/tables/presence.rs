//! What the server says about one of the runtime's tables before anything is created:
//! whether it exists, in which shape, and what the connected role may do about it.
//! One catalog query ([`check_sql`]) answers all of it without DDL and without a lock
//! (`CREATE … IF NOT EXISTS` checks privileges before existence and `CREATE INDEX IF
//! NOT EXISTS` takes a lock even when the index exists, so neither may serve as the
//! check); [`Found`] reads the answer and words what is wrong.

use tokio_postgres::SimpleQueryMessage;

use crate::connection::first_row;

/// The guide's section with the SQL that creates the tables and grants a role their use.
pub(crate) const GUIDE_SECTION: &str = "the guide's section \"The runtime's tables\"";

/// The catalog query for table `name` (`schema.table` or `table`, already validated as
/// plain identifiers, so written into the SQL as they are). `column` is a column newer
/// versions added, whose presence is reported too; `privileges` are the table
/// privileges the runtime's statements need.
pub(crate) fn check_sql(name: &str, column: Option<&str>, privileges: &[&str]) -> String {
    let (schema, table) = match name.split_once('.') {
        Some((schema, table)) => (format!("'{schema}'"), table),
        // An unqualified name is created in, and found first in, the current schema.
        None => ("current_schema()".to_owned(), name),
    };
    let column = match column {
        Some(column) => format!(
            "EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid \
             AND a.attname = '{column}' AND NOT a.attisdropped)"
        ),
        None => "true".to_owned(),
    };
    let lacking = privileges
        .iter()
        .map(|p| format!("CASE WHEN NOT has_table_privilege(c.oid, '{p}') THEN '{p}' END"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT current_user, current_database(), wanted.nspname, \
         s.oid IS NOT NULL, \
         s.oid IS NULL OR has_schema_privilege(s.oid, 'USAGE'), \
         CASE WHEN s.oid IS NULL THEN has_database_privilege(current_database(), 'CREATE') \
              ELSE has_schema_privilege(s.oid, 'CREATE') END, \
         c.oid IS NOT NULL, \
         c.oid IS NOT NULL AND pg_has_role(c.relowner, 'USAGE'), \
         c.oid IS NOT NULL AND {column}, \
         CASE WHEN c.oid IS NOT NULL THEN concat_ws(', ', {lacking}) END \
         FROM (SELECT {schema}::name AS nspname) AS wanted \
         LEFT JOIN pg_namespace s ON s.nspname = wanted.nspname \
         LEFT JOIN pg_class c ON c.relnamespace = s.oid AND c.relname = '{table}' \
         AND c.relkind IN ('r', 'p')"
    )
}

/// The answer to [`check_sql`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// The role the connection runs as.
    pub(crate) role: String,
    pub(crate) database: String,
    /// The table's schema (`None`: an unqualified name with no current schema).
    pub(crate) schema: Option<String>,
    pub(crate) schema_exists: bool,
    /// The role has USAGE on the schema (or the schema does not exist yet).
    pub(crate) may_use_schema: bool,
    /// The role may create the table: CREATE on its schema, or on the database when
    /// the schema must be created too.
    pub(crate) may_create: bool,
    pub(crate) table_exists: bool,
    /// The role may alter the table (it is the owner or a member of the owner role).
    pub(crate) owns_table: bool,
    /// The column newer versions added is there (always `true` without one).
    pub(crate) has_column: bool,
    /// Table privileges the role lacks, e.g. `"INSERT, UPDATE"` (empty when none).
    pub(crate) lacking: String,
}

impl Found {
    /// Reads the reply; `None` when it does not have the expected shape.
    pub(crate) fn parse(messages: &[SimpleQueryMessage]) -> Option<Found> {
        let row = first_row(messages)?;
        let flag = |at: usize| row.get(at).map(|v| v == "t");
        Some(Found {
            role: row.get(0)?.to_owned(),
            database: row.get(1)?.to_owned(),
            schema: row.get(2).map(str::to_owned),
            schema_exists: flag(3)?,
            may_use_schema: flag(4)?,
            may_create: flag(5)?,
            table_exists: flag(6)?,
            owns_table: flag(7)?,
            has_column: flag(8)?,
            lacking: row.get(9).unwrap_or_default().to_owned(),
        })
    }

    /// Why the role cannot use table `name` (the `what`, e.g. "idempotency table") as
    /// it is, or `None` when it can (perhaps in an older shape).
    pub(crate) fn unusable(&self, what: &str, name: &str) -> Option<String> {
        let role = &self.role;
        let schema = self.schema.as_deref().unwrap_or("(none)");
        if !self.may_use_schema {
            return Some(format!(
                "the {what} {name} cannot be used: role \"{role}\" lacks USAGE on schema \
                 \"{schema}\"; grant it (GRANT USAGE ON SCHEMA {schema} TO {role}) as \
                 {GUIDE_SECTION} shows"
            ));
        }
        if !self.table_exists {
            if self.may_create {
                return None;
            }
            return Some(self.missing(what, name));
        }
        if !self.lacking.is_empty() {
            let lacking = &self.lacking;
            return Some(format!(
                "the {what} {name} cannot be used: role \"{role}\" lacks {lacking} on it; \
                 grant it (GRANT {lacking} ON {name} TO {role}) as {GUIDE_SECTION} shows"
            ));
        }
        None
    }

    /// The sentence for a table that is missing and that the role may not create.
    pub(crate) fn missing(&self, what: &str, name: &str) -> String {
        format!(
            "the {what} {name} does not exist, and role \"{}\" may not create it (it lacks {}): \
             have the role that owns the schema run Db::migrate() once, or run the SQL of {GUIDE_SECTION}",
            self.role,
            self.create_privilege()
        )
    }

    /// The privilege that creating the table takes.
    fn create_privilege(&self) -> String {
        match (&self.schema, self.schema_exists) {
            (Some(schema), true) => format!("CREATE on schema \"{schema}\""),
            (Some(schema), false) => format!(
                "CREATE on database \"{}\", which creating schema \"{schema}\" takes",
                self.database
            ),
            (None, _) => {
                "a current schema to create it in (its search_path names none that exists)"
                    .to_owned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found() -> Found {
        Found {
            role: "app".to_owned(),
            database: "shop".to_owned(),
            schema: Some("resilient_tx".to_owned()),
            schema_exists: false,
            may_use_schema: true,
            may_create: false,
            table_exists: false,
            owns_table: false,
            has_column: false,
            lacking: String::new(),
        }
    }

    #[test]
    fn the_check_reads_the_catalogs_and_names_the_table_and_column() {
        let sql = check_sql(
            "resilient_tx.idempotency_keys",
            Some("fingerprint"),
            &["SELECT", "INSERT"],
        );
        assert!(sql.contains("FROM (SELECT 'resilient_tx'::name AS nspname) AS wanted"));
        assert!(sql.contains("c.relname = 'idempotency_keys'"));
        assert!(sql.contains("a.attname = 'fingerprint'"));
        assert!(
            sql.contains("CASE WHEN NOT has_table_privilege(c.oid, 'INSERT') THEN 'INSERT' END")
        );
        assert!(!sql.contains("CREATE "), "no DDL: {sql}");
        let bare = check_sql("commit_markers", None, &["SELECT"]);
        assert!(bare.contains("SELECT current_schema()::name AS nspname"));
        assert!(bare.contains("c.oid IS NOT NULL AND true"));
    }

    #[test]
    fn a_missing_table_says_which_role_lacks_which_privilege_and_what_creates_it() {
        let message = found().unusable("idempotency table", "resilient_tx.idempotency_keys");
        assert_eq!(
            message.as_deref(),
            Some(
                "the idempotency table resilient_tx.idempotency_keys does not exist, and role \
                 \"app\" may not create it (it lacks CREATE on database \"shop\", which creating \
                 schema \"resilient_tx\" takes): have the role that owns the schema run \
                 Db::migrate() once, or run the SQL of the guide's section \"The runtime's tables\""
            )
        );
        let in_schema = Found {
            schema_exists: true,
            ..found()
        };
        assert!(
            in_schema
                .unusable("commit marker table", "resilient_tx.commit_markers")
                .is_some_and(|m| m.contains("it lacks CREATE on schema \"resilient_tx\""))
        );
    }

    #[test]
    fn a_table_the_role_may_create_or_use_is_usable() {
        let creatable = Found {
            may_create: true,
            ..found()
        };
        assert_eq!(creatable.unusable("idempotency table", "t"), None);
        let present = Found {
            table_exists: true,
            ..found()
        };
        assert_eq!(present.unusable("idempotency table", "t"), None);
    }

    #[test]
    fn missing_usage_or_table_privileges_are_named() {
        let no_usage = Found {
            schema_exists: true,
            may_use_schema: false,
            ..found()
        };
        assert!(
            no_usage
                .unusable("idempotency table", "resilient_tx.k")
                .is_some_and(|m| m.contains("lacks USAGE on schema \"resilient_tx\""))
        );
        let no_insert = Found {
            schema_exists: true,
            table_exists: true,
            lacking: "INSERT, UPDATE".to_owned(),
            ..found()
        };
        assert!(
            no_insert
                .unusable("idempotency table", "resilient_tx.k")
                .is_some_and(|m| m.contains("GRANT INSERT, UPDATE ON resilient_tx.k TO app"))
        );
    }
}
