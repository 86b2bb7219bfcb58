//! Why a collision cannot be resolved as asked ([`crate::conflict`]).

/// Why a collision cannot be resolved as asked.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No collision has that id.
    #[error("no conflict #{id}: `berth conflicts --site CENTRAL` lists them")]
    Unknown {
        /// The id given.
        id: i64,
    },
    /// The table is no longer replicated.
    #[error("conflict #{id}: table {table} is no longer replicated")]
    Table {
        /// The conflict.
        id: i64,
        /// Its table.
        table: String,
    },
}
