//! What SQL berth lets a user run inside its own transactions: allow-lists enforced by
//! SQLite's authorizer while each statement is prepared, so a refused statement never runs.
//!
//! Two policies (SPEC 2.8):
//! - [`Policy::Script`], for `send-sql`: any statement that reads or changes the main
//!   database's content or schema, but nothing that begins, ends or releases a transaction
//!   (`BEGIN`, `COMMIT`, `END`, `ROLLBACK`, `SAVEPOINT`, `RELEASE`), attaches or detaches a
//!   database, or runs a pragma. Central tries the script inside a savepoint of a transaction
//!   of its own; such a statement would end it, or change the connection for good.
//! - [`Policy::Query`], for docking rules and mappings: reads only (`SELECT`, reading tables
//!   and views, functions, recursive common table expressions); everything else is refused.
//!
//! [`refusal`] is the decision, a pure function of one authorizer request; [`Gate`] installs
//! it on a connection for as long as the gate lives.

use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization, TransactionOperation};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Which allow-list applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// A `send-sql` script: reads and writes of the main database, no transaction control,
    /// `ATTACH`/`DETACH` or pragmas.
    Script,
    /// A docking rule or mapping: a read-only query.
    Query,
}

/// Functions refused under every policy: they reach outside the database.
const OUTSIDE_FUNCTIONS: &[&str] = &["load_extension"];

/// Why `policy` refuses `action`, as the statement it comes from (`COMMIT`,
/// `ATTACH 'x.db'`, `PRAGMA foreign_keys = OFF`, `INSERT INTO t`); `None` if it is allowed.
pub fn refusal(policy: Policy, action: &AuthAction<'_>) -> Option<String> {
    // Refused under both policies: they end or change the transaction or the connection.
    let always = match action {
        AuthAction::Transaction { operation } => Some(
            match operation {
                TransactionOperation::Begin => "BEGIN",
                TransactionOperation::Rollback => "ROLLBACK",
                // SQLite says "COMMIT", which rusqlite does not name (`Unknown`).
                _ => "COMMIT (or END)",
            }
            .to_string(),
        ),
        AuthAction::Savepoint {
            operation,
            savepoint_name,
        } => Some(match operation {
            TransactionOperation::Begin => format!("SAVEPOINT {savepoint_name}"),
            TransactionOperation::Release => format!("RELEASE {savepoint_name}"),
            TransactionOperation::Rollback => format!("ROLLBACK TO {savepoint_name}"),
            _ => format!("a savepoint statement on {savepoint_name}"),
        }),
        AuthAction::Attach { filename } => Some(format!("ATTACH {filename:?}")),
        AuthAction::Detach { database_name } => Some(format!("DETACH {database_name}")),
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => Some(match pragma_value {
            Some(v) => format!("PRAGMA {pragma_name} = {v}"),
            None => format!("PRAGMA {pragma_name}"),
        }),
        AuthAction::Function { function_name }
            if OUTSIDE_FUNCTIONS
                .iter()
                .any(|f| f.eq_ignore_ascii_case(function_name)) =>
        {
            Some(format!("{function_name}()"))
        }
        AuthAction::Unknown { code, .. } => Some(format!("an operation SQLite numbers {code}")),
        _ => None,
    };
    if always.is_some() {
        return always;
    }
    match policy {
        Policy::Script => None,
        Policy::Query => match action {
            AuthAction::Select
            | AuthAction::Read { .. }
            | AuthAction::Function { .. }
            | AuthAction::Recursive => None,
            AuthAction::Insert { table_name } => Some(format!("INSERT INTO {table_name}")),
            AuthAction::Update { table_name, .. } => Some(format!("UPDATE {table_name}")),
            AuthAction::Delete { table_name } => Some(format!("DELETE FROM {table_name}")),
            other => Some(format!("{other:?}")),
        },
    }
}

/// What the authorizer callback shares with the gate.
#[derive(Debug, Default)]
struct State {
    armed: AtomicBool,
    refused: Mutex<Option<String>>,
}

impl State {
    /// The authorizer's answer: refuse (keeping the first thing refused, which the error
    /// names) or allow.
    fn answer(&self, refused: Option<String>) -> Authorization {
        match refused {
            Some(what) => {
                self.refused
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get_or_insert(what);
                Authorization::Deny
            }
            None => Authorization::Allow,
        }
    }

    fn take(&self) -> Option<String> {
        self.refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// A connection with a [`Policy`]'s authorizer installed; removed again when the gate is
/// dropped, whatever happened meanwhile. The policy applies only while the gate is armed
/// ([`Gate::arm`]), so berth's own statements around the user's (savepoints, capture) run
/// unchecked.
pub struct Gate<'c> {
    conn: &'c mut Connection,
    state: Arc<State>,
}

impl std::fmt::Debug for Gate<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("state", &self.state).finish()
    }
}

impl<'c> Gate<'c> {
    /// Installs `policy`'s authorizer on `conn`, disarmed.
    pub fn new(conn: &'c mut Connection, policy: Policy) -> rusqlite::Result<Self> {
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            if !shared.armed.load(Ordering::SeqCst) {
                return Authorization::Allow;
            }
            // Only the main database and the temp schema: a statement naming an attached
            // database cannot have been attached by the user (ATTACH is refused), but say
            // no all the same.
            let outside = ctx
                .database_name
                .is_some_and(|d| d != "main" && d != "temp");
            let refused = refusal(policy, &ctx.action).or_else(|| {
                outside.then(|| format!("database {:?}", ctx.database_name.unwrap_or_default()))
            });
            shared.answer(refused)
        }))?;
        Ok(Self { conn, state })
    }

    /// Turns the policy on (`true`) or off.
    pub fn arm(&self, on: bool) {
        self.state.armed.store(on, Ordering::SeqCst);
    }

    /// What the policy refused since the last call, if anything (the first refusal).
    pub fn take_refusal(&self) -> Option<String> {
        self.state.take()
    }
}

impl Deref for Gate<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        // Removing a callback cannot fail in practice; if it did, the connection keeps a
        // disarmed authorizer, which allows everything.
        self.arm(false);
        let _ = self
            .conn
            .authorizer(None::<fn(AuthContext<'_>) -> Authorization>);
    }
}

/// A read-only copy of a database's schema (tables, views and indexes, no rows, no
/// triggers) in memory, with a [`Policy::Query`] gate: where docking rules are vetted
/// before they are prepared on the real database. Owning its connection, it needs no
/// mutable access to the caller's.
#[derive(Debug)]
pub struct QueryProbe {
    conn: Connection,
    state: Arc<State>,
}

/// What [`QueryProbe::vet`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vetted {
    /// The statement only reads.
    Allowed,
    /// The statement does what the policy refuses (described as in [`refusal`]).
    Refused(String),
    /// The statement did not compile against the copy (SQLite's message); the caller decides
    /// by compiling it against the real database.
    Unknown(String),
}

impl QueryProbe {
    /// Copies the schema of `source` (main database) and runs `extra` (the router's TEMP
    /// relations, for instance) in the copy.
    pub fn new(source: &Connection, extra: &str) -> rusqlite::Result<Self> {
        let mut conn = Connection::open_in_memory()?;
        let mut st = source.prepare(
            "SELECT sql FROM main.sqlite_master
              WHERE sql IS NOT NULL AND type IN ('table', 'view', 'index')
                AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
              ORDER BY rowid",
        )?;
        let ddl: Vec<String> = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for sql in ddl {
            // A virtual table's shadow tables exist once the virtual table does; a module
            // this build lacks leaves its table out. Either way a rule that needs the
            // missing object comes back `Unknown`, and the real database decides.
            let _ = conn.execute_batch(&sql);
        }
        conn.execute_batch(extra)?;
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            shared.answer(refusal(Policy::Query, &ctx.action))
        }))?;
        Ok(Self { conn, state })
    }

    /// Prepares `sql` in the copy under [`Policy::Query`].
    pub fn vet(&self, sql: &str) -> Vetted {
        self.state.take();
        let outcome = self.conn.prepare(sql).map(|st| st.readonly());
        match (self.state.take(), outcome) {
            (Some(what), _) => Vetted::Refused(what),
            (None, Ok(true)) => Vetted::Allowed,
            (None, Ok(false)) => Vetted::Refused("a write".into()),
            (None, Err(e)) => Vetted::Unknown(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(operation: TransactionOperation) -> AuthAction<'static> {
        AuthAction::Transaction { operation }
    }

    #[test]
    fn refusal_case_table() {
        use Policy::*;
        let cases: Vec<(Policy, AuthAction<'static>, Option<&str>)> = vec![
            (Script, txn(TransactionOperation::Begin), Some("BEGIN")),
            (
                Script,
                txn(TransactionOperation::Unknown),
                Some("COMMIT (or END)"),
            ),
            (Query, txn(TransactionOperation::Rollback), Some("ROLLBACK")),
            (
                Script,
                AuthAction::Savepoint {
                    operation: TransactionOperation::Release,
                    savepoint_name: "x",
                },
                Some("RELEASE x"),
            ),
            (
                Script,
                AuthAction::Attach { filename: "x.db" },
                Some("ATTACH \"x.db\""),
            ),
            (
                Script,
                AuthAction::Detach { database_name: "x" },
                Some("DETACH x"),
            ),
            (
                Query,
                AuthAction::Pragma {
                    pragma_name: "foreign_keys",
                    pragma_value: Some("OFF"),
                },
                Some("PRAGMA foreign_keys = OFF"),
            ),
            (
                Script,
                AuthAction::Function {
                    function_name: "LOAD_EXTENSION",
                },
                Some("LOAD_EXTENSION()"),
            ),
            (Script, AuthAction::Insert { table_name: "t" }, None),
            (Script, AuthAction::CreateTable { table_name: "t" }, None),
            (
                Query,
                AuthAction::Insert { table_name: "t" },
                Some("INSERT INTO t"),
            ),
            (
                Query,
                AuthAction::Delete { table_name: "t" },
                Some("DELETE FROM t"),
            ),
            (Query, AuthAction::Select, None),
            (
                Query,
                AuthAction::Read {
                    table_name: "t",
                    column_name: "c",
                },
                None,
            ),
            (
                Query,
                AuthAction::Function {
                    function_name: "lower",
                },
                None,
            ),
            (Query, AuthAction::Recursive, None),
        ];
        for (policy, action, want) in cases {
            assert_eq!(
                refusal(policy, &action).as_deref(),
                want,
                "{policy:?} {action:?}"
            );
        }
    }

    #[test]
    fn gate_refuses_while_armed_and_is_removed_on_drop() {
        let mut c = Connection::open_in_memory().unwrap();
        {
            let g = Gate::new(&mut c, Policy::Script).unwrap();
            g.execute_batch("CREATE TABLE t(x)").unwrap();
            g.arm(true);
            assert!(g.prepare("COMMIT").is_err());
            assert_eq!(g.take_refusal().as_deref(), Some("COMMIT (or END)"));
            assert!(g.prepare("INSERT INTO t VALUES (1)").is_ok());
            assert_eq!(g.take_refusal(), None);
        }
        // Gone: the connection prepares anything again.
        c.execute_batch("PRAGMA user_version = 3").unwrap();
    }

    #[test]
    fn probe_vets_against_a_copy_of_the_schema() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t(id TEXT PRIMARY KEY); CREATE VIEW v AS SELECT id FROM t;")
            .unwrap();
        let p = QueryProbe::new(&c, "CREATE TEMP TABLE n(id)").unwrap();
        assert_eq!(
            p.vet("SELECT id FROM v JOIN temp.n USING (id)"),
            Vetted::Allowed
        );
        assert_eq!(
            p.vet("ATTACH 'x.db' AS x"),
            Vetted::Refused("ATTACH \"x.db\"".into())
        );
        assert_eq!(
            p.vet("PRAGMA table_info(t)"),
            Vetted::Refused("PRAGMA table_info = t".into())
        );
        assert!(matches!(p.vet("SELECT 1 FROM nosuch"), Vetted::Unknown(_)));
        assert!(matches!(
            p.vet("INSERT INTO t VALUES ('a')"),
            Vetted::Refused(_)
        ));
        assert!(matches!(
            p.vet("WITH q AS (SELECT 'a') INSERT INTO t SELECT * FROM q"),
            Vetted::Refused(_)
        ));
    }
}
