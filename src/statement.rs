//! pgbroker's statements, run the way the connection allows: named and prepared once per
//! connection (a session of its own: the default), or unnamed, parsed with every execution
//! (behind a transaction-mode pooler such as PgBouncer, where a named statement prepared in one
//! transaction may be missing, or another client's, in the next).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use postgres::types::{ToSql, Type};
use postgres::{GenericClient, Row, Statement};

/// A statement ready to run on a connection of its kind.
#[derive(Clone)]
pub(crate) enum Stmt {
    /// Prepared on the connection, executed by name (one round trip, no parse).
    Named(Statement),
    /// Parsed, bound and executed as the unnamed statement in one round trip, with parameter
    /// types learned once per process.
    Unnamed(Arc<str>, Arc<[Type]>),
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Stmt {
    /// The unnamed form of `sql`, learning its parameter types on `client` the first time.
    pub(crate) fn unnamed(
        client: &mut impl GenericClient,
        sql: &str,
    ) -> Result<Stmt, postgres::Error> {
        Ok(Stmt::Unnamed(sql.into(), param_types(client, sql)?))
    }

    fn typed<'a>(types: &'a [Type], params: Params<'a>) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
        params.iter().copied().zip(types.iter().cloned()).collect()
    }

    pub(crate) fn execute(
        &self,
        client: &mut impl GenericClient,
        params: Params<'_>,
    ) -> Result<u64, postgres::Error> {
        match self {
            Stmt::Named(s) => client.execute(s, params),
            Stmt::Unnamed(sql, types) => client.execute_typed(sql, &Self::typed(types, params)),
        }
    }

    pub(crate) fn query(
        &self,
        client: &mut impl GenericClient,
        params: Params<'_>,
    ) -> Result<Vec<Row>, postgres::Error> {
        match self {
            Stmt::Named(s) => client.query(s, params),
            Stmt::Unnamed(sql, types) => client.query_typed(sql, &Self::typed(types, params)),
        }
    }

    pub(crate) fn query_one(
        &self,
        client: &mut impl GenericClient,
        params: Params<'_>,
    ) -> Result<Row, postgres::Error> {
        match self {
            Stmt::Named(s) => client.query_one(s, params),
            Stmt::Unnamed(sql, types) => client.query_typed_one(sql, &Self::typed(types, params)),
        }
    }

    pub(crate) fn query_opt(
        &self,
        client: &mut impl GenericClient,
        params: Params<'_>,
    ) -> Result<Option<Row>, postgres::Error> {
        match self {
            Stmt::Named(s) => client.query_opt(s, params),
            Stmt::Unnamed(sql, types) => client.query_typed_opt(sql, &Self::typed(types, params)),
        }
    }
}

/// The parameter types of `sql`, asked of the server once per process. The statement is
/// prepared and closed inside one transaction, so behind a transaction-mode pooler the
/// named statement lives and dies on one server connection.
fn param_types(client: &mut impl GenericClient, sql: &str) -> Result<Arc<[Type]>, postgres::Error> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<[Type]>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let lock = || cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(types) = lock().get(sql) {
        return Ok(types.clone());
    }
    let mut tx = client.transaction()?;
    let stmt = tx.prepare(sql)?;
    let types: Arc<[Type]> = stmt.params().into();
    drop(stmt); // sends Close before the COMMIT below
    tx.commit()?;
    lock().insert(sql.to_owned(), types.clone());
    Ok(types)
}
