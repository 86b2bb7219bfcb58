//! A migration's executable step: checked (allowed here, signed by an admin), run after the
//! migration commits, with a backup of the database restored if it fails.

use crate::error::{EngineError, Result};
use crate::evolve::history::Migration;
use crate::site::{Role, Site};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where a migration's backup is kept while its executable step runs.
pub fn backup_path(site: &Site, what: &str) -> PathBuf {
    site.dir.join("backups").join(format!("before-{what}.db"))
}

/// Copies the site's database to `path` (SQLite's online backup).
pub fn backup(site: &Site, path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(&site.dir);
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let _ = std::fs::remove_file(path);
    site.conn
        .backup(rusqlite::MAIN_DB, path, rusqlite::backup::NO_PROGRESS)?;
    Ok(())
}

/// Puts the database back as it was in the backup at `path`.
pub fn restore(site: &mut Site, path: &Path) -> Result<()> {
    site.conn
        .restore(rusqlite::MAIN_DB, path, rusqlite::backup::NO_PROGRESS)?;
    Ok(())
}

/// Runs migration `m`'s executable step against the site's database, which holds no open
/// transaction: the program file is written into `migrations/exec-NNNN/` and the command runs
/// from there with `BERTH_DATABASE`, `BERTH_SITE_DIR`, `BERTH_SITE_NAME`,
/// `BERTH_MIGRATION_VERSION` and `BERTH_MIGRATION_NAME` set. Its writes are captured like
/// any application's (each site runs the step, so the same values meet at central and
/// merge as equal). Output goes to `output.log` there.
pub fn run_exec(site: &Site, m: &Migration) -> Result<()> {
    let Some(step) = &m.exec else {
        return Ok(());
    };
    let failed = |reason: String| EngineError::ExecStep {
        version: m.version,
        reason,
    };
    step.check().map_err(|e| failed(e.to_string()))?;
    let dir = site
        .dir
        .join("migrations")
        .join(format!("exec-{:04}", m.version));
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
    let bytes = step.bytes()?;
    let program_path = dir.join(&step.file);
    crate::transport::write_atomic(&dir, &step.file, |mut f| {
        f.write_all(&bytes)
            .map_err(|e| EngineError::io(&program_path, e))?;
        Ok(f)
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&program_path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| EngineError::io(&program_path, e))?;
    }
    let log = dir.join("output.log");
    let out = std::fs::File::create(&log).map_err(|e| EngineError::io(&log, e))?;
    let err = out.try_clone().map_err(|e| EngineError::io(&log, e))?;
    // The first word names the shipped file, or a program on PATH: never leave a relative
    // name to the platform's lookup rules.
    let program = if step.command[0] == step.file {
        program_path.clone().into_os_string()
    } else {
        step.command[0].clone().into()
    };
    let status = std::process::Command::new(program)
        .args(&step.command[1..])
        .current_dir(&dir)
        .env("BERTH_DATABASE", site.db_path())
        .env("BERTH_SITE_DIR", &site.dir)
        .env("BERTH_SITE_NAME", site.name())
        .env("BERTH_MIGRATION_VERSION", m.version.to_string())
        .env("BERTH_MIGRATION_NAME", &m.name)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .status();
    let tail = crate::upgrade::node::tail(&log);
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(failed(format!(
            "{}; output: {tail}",
            s.code().map_or_else(
                || "killed by a signal".to_string(),
                |c| format!("exit code {c}")
            )
        ))),
        Err(e) => Err(failed(format!(
            "could not start {:?}: {e}",
            step.command[0]
        ))),
    }
}

/// Whether this site may run `m`'s executable step: the site allows executables, and an
/// admin key signed the step (at central: one registered there).
pub fn check_exec(site: &Site, m: &Migration) -> Result<()> {
    let Some(step) = &m.exec else {
        return Ok(());
    };
    let refused = |reason: String| EngineError::Refused {
        bundle: format!("migration {}", m.version),
        reason,
    };
    step.check()?;
    if !step.signed(m) {
        return Err(refused(
            "its executable step is not signed by an admin key (berth migration submit --admin-key)".into(),
        ));
    }
    if site.role() == Role::Central
        && !crate::keychain::admins(&site.conn)?
            .iter()
            .any(|a| a.public_key == step.admin_key)
    {
        return Err(refused(format!(
            "its executable step is signed by key {}, which is not a registered admin key (berth keys admin add)",
            berth_bundle::PublicKey::from_hex(&step.admin_key)
                .map(|k| k.key_id().to_string())
                .unwrap_or_default()
        )));
    }
    if !site.config.allow_executables {
        return Err(refused(
            "it carries an executable step and this site does not allow executables \
             (allow_executables = true in berth.toml)"
                .into(),
        ));
    }
    Ok(())
}
