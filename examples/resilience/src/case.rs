//! The thirteen cases of the matrix by id and name.

use std::fmt;

/// One case of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Case {
    /// CL-01: the server is stopped, later started.
    Cl01,
    /// CL-02: the network goes silent (proxy blackhole), later heals.
    Cl02,
    /// CL-03: every gateway connection is terminated mid-load.
    Cl03,
    /// CL-04: the network adds latency.
    Cl04,
    /// CP-01: more slow requests than connections.
    Cp01,
    /// CP-02: a full pool, then the server restarts.
    Cp02,
    /// CP-03: the pool refills to its minimum after connection loss and an outage.
    Cp03,
    /// FO-01: the primary stops, the replica is promoted.
    Fo01,
    /// FO-02: reads on a lagging replica; read-your-writes on request.
    Fo02,
    /// FO-03: the old primary comes back (read-only, demoted, isolated primary).
    Fo03,
    /// TX-01: two requests update two rows in opposite order.
    Tx01,
    /// TX-02: a transaction runs past its timeouts.
    Tx02,
    /// TX-03: the connection is cut between two statements and during COMMIT.
    Tx03,
}

impl Case {
    /// Every case, in the matrix's order.
    pub const ALL: [Case; 13] = [
        Case::Cl01,
        Case::Cl02,
        Case::Cl03,
        Case::Cl04,
        Case::Cp01,
        Case::Cp02,
        Case::Cp03,
        Case::Fo01,
        Case::Fo02,
        Case::Fo03,
        Case::Tx01,
        Case::Tx02,
        Case::Tx03,
    ];

    /// The matrix's id, e.g. `CL-01`.
    pub fn id(self) -> &'static str {
        match self {
            Case::Cl01 => "CL-01",
            Case::Cl02 => "CL-02",
            Case::Cl03 => "CL-03",
            Case::Cl04 => "CL-04",
            Case::Cp01 => "CP-01",
            Case::Cp02 => "CP-02",
            Case::Cp03 => "CP-03",
            Case::Fo01 => "FO-01",
            Case::Fo02 => "FO-02",
            Case::Fo03 => "FO-03",
            Case::Tx01 => "TX-01",
            Case::Tx02 => "TX-02",
            Case::Tx03 => "TX-03",
        }
    }

    /// The matrix's name of the case.
    pub fn title(self) -> &'static str {
        match self {
            Case::Cl01 => "database shutdown",
            Case::Cl02 => "network partition",
            Case::Cl03 => "connection drop",
            Case::Cl04 => "slow network",
            Case::Cp01 => "pool exhaustion",
            Case::Cp02 => "stale connections",
            Case::Cp03 => "pool recovery",
            Case::Fo01 => "primary failure",
            Case::Fo02 => "replica lag",
            Case::Fo03 => "split brain",
            Case::Tx01 => "deadlock",
            Case::Tx02 => "long transaction",
            Case::Tx03 => "mid-transaction failure",
        }
    }

    /// The case whose id is `id` (case-insensitive, `CL-01` or `cl01`).
    pub fn from_id(id: &str) -> Option<Case> {
        let wanted: String = id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_uppercase();
        Case::ALL
            .into_iter()
            .find(|case| case.id().replace('-', "") == wanted)
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.id(), self.title())
    }
}
