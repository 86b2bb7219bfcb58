//! Applying a migration: at a node inside the bundle's transaction, at central journaled
//! for the nodes, and made from a target schema or from SQL.

use super::exec::{backup, backup_path, check_exec, restore, run_exec};
use super::record::journal;
use super::stream::state;
use super::translate::Translation;
use crate::error::Result;
use crate::evolve::history::{self, Migration};
use crate::evolve::snapshot::Snapshot;
use crate::site::{Role, Site};
use crate::store;
use rusqlite::Connection;

/// What a migration from central's stream did at a node.
#[derive(Debug)]
pub enum AtNode {
    /// The node already has it (it wrote it, or imported it).
    Had,
    /// Applied; the translation of names it made.
    Applied(Translation),
    /// Not yet: the node's software is older than the migration needs, or the migration does
    /// not follow the node's schema (the bundle is held with this reason).
    Waits(String),
}

/// Applies a migration from central's stream at a node, inside the bundle's transaction.
pub fn apply_at_node(conn: &Connection, m: &Migration) -> Result<AtNode> {
    let have = state(conn)?;
    if m.version <= have.version {
        return match history::migration(conn, m.version)? {
            Some(mine) if mine.checksum_after != m.checksum_after => Ok(AtNode::Waits(format!(
                "central's migration {} ({:?}) differs from the one this site has under the \
                     same version ({:?}); the schema histories diverged",
                m.version, m.name, mine.name
            ))),
            _ => Ok(AtNode::Had),
        };
    }
    if !crate::upgrade::node::software_gate(conn, &m.software_level)? {
        return Ok(AtNode::Waits(format!(
            "migration {} ({:?}) needs software level {}, this site has {}; it applies by \
                 itself once that upgrade is installed",
            m.version,
            m.name,
            m.software_level,
            crate::upgrade::node::installed_level(conn)?
        )));
    }
    if m.version != have.version + 1 {
        return Ok(AtNode::Waits(format!(
            "migration {} arrived but this site is at schema version {}",
            m.version, have.version
        )));
    }
    history::apply_in_tx(conn, m)?;
    let after = crate::evolve::snapshot::read(conn)?;
    let tr = Translation::new(m, &after);
    tr.log(conn)?;
    Ok(AtNode::Applied(tr))
}

/// Applies migration `m` to central's master database and journals it for every node, in
/// one transaction. What central's log holds from before is routed first, so every change
/// captured under the old schema reaches the nodes in the old schema, before the migration.
pub fn apply_at_central(site: &Site, m: &Migration) -> Result<()> {
    site.require(Role::Central)?;
    let catalog = site.catalog()?;
    let model = site.docking_model()?;
    history::apply_migration_with(
        &site.conn,
        m,
        |c| Ok(crate::route::route(c, &catalog, model.as_ref())?),
        |c| Ok(journal(c, m)?),
    )?;
    Ok(())
}

/// Creates the next migration from a target schema: computed from the live schema to
/// `target`, then applied (at central also journaled for the nodes, [`apply_at_central`]).
/// This is how central's schema changes: never behind berth's back.
pub fn create_from_target(
    site: &Site,
    target: &Snapshot,
    new: &history::NewMigration<'_>,
) -> Result<Migration> {
    if let Some(last) = history::latest(&site.conn)? {
        let live = crate::evolve::snapshot::read(&site.conn)?.checksum()?;
        if live != last.checksum {
            return Err(crate::evolve::Error::Drift {
                version: last.version,
                recorded: last.checksum,
                current: live,
            }
            .into());
        }
    }
    let live = crate::evolve::snapshot::read(&site.conn)?;
    let version = history::version(&site.conn)?;
    let plan = crate::evolve::diff::diff(&live, target, &new.diff)?;
    if plan.is_empty() {
        return Err(crate::evolve::Error::NothingToMigrate {
            version,
            checksum: plan.checksum_before,
        }
        .into());
    }
    let m = Migration {
        exec: None,
        version: version + 1,
        name: checked_name(new.name)?,
        sql: plan.body(),
        checksum_before: plan.checksum_before.clone(),
        checksum_after: plan.checksum_after.clone(),
        software_level: new.software_level.to_string(),
        foreign_keys_off: plan.foreign_keys_off,
        origin: new.origin.to_string(),
        created: store::now(),
        applied: None,
        renames: new.diff.renames.iter().map(ToString::to_string).collect(),
    };
    if site.role() == Role::Central {
        apply_at_central(site, &m)?;
    } else {
        history::apply_migration(&site.conn, &m)?;
    }
    Ok(m)
}

pub(super) fn checked_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(crate::evolve::Error::Snapshot {
            reason: format!("migration name {name:?}: use 1-100 printable characters"),
        }
        .into());
    }
    Ok(name.to_string())
}

/// Changes a developer's copy with `sql` (capture suspended, so columns the capture triggers
/// name can be dropped) and freezes the change as the next migration, in one transaction:
/// when the migration cannot be made, the SQL is undone too.
pub fn create_by_sql(site: &Site, sql: &str, new: &history::NewMigration<'_>) -> Result<Migration> {
    let tx =
        rusqlite::Transaction::new_unchecked(&site.conn, rusqlite::TransactionBehavior::Immediate)?;
    crate::capture::suspend(&tx)?;
    crate::evolve::apply::run_statements(&tx, sql)?;
    let m = history::create_migration(&tx, new)?;
    tx.commit()?;
    Ok(m)
}

/// Applies a migration at this site in its own transaction (at central also journaled for
/// the nodes, [`apply_at_central`]); with an executable step, a backup is taken first, the
/// step runs after the migration commits, and the backup is restored if it fails.
pub fn apply_here(site: &mut Site, m: &Migration) -> Result<()> {
    check_exec(site, m)?;
    let plain = |site: &Site| -> Result<()> {
        if site.role() == Role::Central {
            apply_at_central(site, m)
        } else {
            Ok(history::apply_migration(&site.conn, m)?)
        }
    };
    if m.exec.is_none() {
        return plain(site);
    }
    let path = backup_path(site, &format!("migration-{:04}", m.version));
    backup(site, &path)?;
    let result = plain(site).and_then(|()| run_exec(site, m));
    if result.is_err() {
        restore(site, &path)?;
    }
    let _ = std::fs::remove_file(&path);
    result
}
