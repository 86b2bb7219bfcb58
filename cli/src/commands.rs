//! One function per command: each opens what it needs, calls the engine and prints (text,
//! or JSON with `--json`). The arguments are in [`crate::args`].

use crate::args::*;
use crate::{output, sample, transports, upgrade};
use anyhow::{Context, Result, bail};
use berth_bundle::{Bundle, Limits, PublicKey, SecretKey, TrustedKey, TrustedKeys};
use berth_engine::dock::Disposition;
use berth_engine::dock::DockOptions;
use berth_engine::site::{CentralInit, Site};
use berth_engine::{enroll, status, transport};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub(crate) fn init_central(a: InitCentralArgs) -> Result<ExitCode> {
    let InitCentralArgs {
        dir,
        schema,
        docking,
        data,
        name,
    } = a;
    let (site, warnings) = Site::init_central(&CentralInit {
        dir: &dir,
        name: name.as_deref(),
        schema: &schema,
        docking: docking.as_deref(),
        data: data.as_deref(),
    })
    .with_context(|| format!("creating central site in {}", dir.display()))?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "created central site {} in {} (key {})",
        site.name(),
        dir.display(),
        site.public_key().key_id()
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn init_node(a: InitNodeArgs) -> Result<ExitCode> {
    let InitNodeArgs { dir, name, via } = a;
    let site = Site::init_node(&dir, &name)
        .with_context(|| format!("creating node site in {}", dir.display()))?;
    let req = enroll::write_request(&site, &via).context("writing the enrollment request")?;
    println!(
        "created node site {name} in {} (key {})",
        dir.display(),
        site.public_key().key_id()
    );
    println!("enrollment request: {}", req.display());
    println!(
        "next: the admin runs `berth node add {name} --site CENTRAL --via FOLDER` and checks the key id above"
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn node_add(a: NodeAddArgs) -> Result<ExitCode> {
    let NodeAddArgs {
        name,
        site,
        via,
        request,
        out,
        attrs,
        encrypt,
        json,
    } = a;
    let mut s = Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
    let req = match (&request, &via) {
        (Some(r), _) => r.clone(),
        (None, Some(v)) => find_request(v, &name)?,
        (None, None) => bail!("give --via FOLDER or --request FILE"),
    };
    let out = out
        .or(via)
        .or_else(|| req.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    // `--out FILE`: written under its self-describing name beside it, then renamed.
    let out_file =
        (!out.is_dir() && out.extension().is_some_and(|e| e == "zip")).then(|| out.clone());
    let out_dir = match &out_file {
        Some(f) => f
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        None => out,
    };
    let attrs: BTreeMap<String, String> = attrs.into_iter().collect();
    // `--encrypt`: the engine writes the extract sealed (it conflicts with `--out`).
    let mut added = enroll::add_node_with(&mut s, &name, &req, &attrs, &out_dir, encrypt)
        .with_context(|| format!("approving {name} from {}", req.display()))?;
    if let Some(f) = out_file {
        std::fs::rename(&added.extract, &f).with_context(|| format!("writing {}", f.display()))?;
        added.extract = f;
    }
    if request.is_none() {
        transport::move_into(&req, &s.folder("archive"))?;
    }
    if json {
        output::json(&added)?;
    } else {
        println!("registered node {} with key {}", added.name, added.key_id);
        if let Some(old) = &added.replaced {
            println!(
                "it replaces the revoked key {old}: bundles signed by that key stay refused, and what central had written to it is withdrawn"
            );
        }
        println!(
            "initial extract ({} rows): {}",
            added.rows,
            added.extract.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn dock(a: DockArgs) -> Result<ExitCode> {
    let mut s =
        Site::open(&a.site).with_context(|| format!("opening site {}", a.site.display()))?;
    let opts = DockOptions {
        upload: !a.download_only,
        download: !a.upload_only,
        progress: output::bars(a.json),
        seal: a.encrypt,
        volume_size: Some(a.volume_size),
        ..DockOptions::default()
    };
    let via = if a.via.is_file() {
        if !transports::taken_from_folder(&a.via) {
            berth_engine::dock::import_file(&s, &a.via)
                .with_context(|| format!("taking in {}", a.via.display()))?;
        }
        a.via
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    } else {
        a.via.clone()
    };
    // A script reading --json answers no question: each takes its default.
    let prompt: Box<dyn berth_engine::upgrade::Prompt> = if a.json {
        Box::new(berth_engine::upgrade::NonInteractive)
    } else {
        Box::new(upgrade::TerminalPrompt::default())
    };
    let report = berth_engine::dock::dock_with_prompt(&mut s, &via, &opts, &*prompt)
        .with_context(|| format!("docking {} via {}", s.name(), via.display()))?;
    if a.json {
        output::json(&report)?;
    } else {
        output::dock_report(&report);
        upgrade::print_notes(&report.upgrade);
    }
    if report.count(Disposition::Quarantined) > 0 || report.count(Disposition::Retry) > 0 {
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn status(a: SiteArgs) -> Result<ExitCode> {
    let s = Site::open(&a.site).with_context(|| format!("opening site {}", a.site.display()))?;
    let st = status::status(&s)?;
    let watcher = transports::watcher_state(&a.site);
    if a.json {
        let mut v = serde_json::to_value(&st)?;
        if let (Some(obj), Some(w)) = (v.as_object_mut(), watcher) {
            obj.insert("watcher".into(), w);
        }
        output::json(&v)?
    } else {
        output::status(&st);
        transports::print_watcher(watcher.as_ref());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn verify(a: SiteArgs) -> Result<ExitCode> {
    let v = berth_engine::verify::verify(&a.site)
        .with_context(|| format!("verifying site {}", a.site.display()))?;
    if a.json {
        output::json(&v)?;
    } else {
        output::verification(&v);
    }
    if !v.ok() {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn send_sql(a: SendSqlArgs) -> Result<ExitCode> {
    let SendSqlArgs { site, nodes, file } = a;
    let mut s = Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
    s.require(berth_engine::site::Role::Central)?;
    let sql =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    berth_engine::partial::send_sql(&mut s.conn, &nodes, &sql)
        .with_context(|| format!("sending {} to {}", file.display(), nodes.join(", ")))?;
    println!(
        "journaled for {}; it travels with their next bundles",
        nodes.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn explain(a: ExplainArgs) -> Result<ExitCode> {
    let ExplainArgs {
        site,
        node,
        table,
        key,
        json,
    } = a;
    let s = Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
    let model = s.docking_model()?.ok_or_else(|| {
        anyhow::anyhow!(
            "site {} has no docking model: every node sees every row",
            s.name()
        )
    })?;
    let peer = berth_engine::peer::require(&s.conn, &node)?;
    let attributes: BTreeMap<String, String> =
        serde_json::from_str(&peer.attrs).unwrap_or_default();
    let who = berth_engine::route::oracle::Node {
        name: node.clone(),
        attributes,
    };
    let key: Vec<serde_json::Value> = match serde_json::from_str(&key) {
        Ok(serde_json::Value::Array(a)) => a,
        _ => vec![serde_json::Value::String(key.clone())],
    };
    let e = berth_engine::route::explain::explain(&s.conn, &model, &who, &table, &key)?;
    if json {
        output::json(&e)?;
    } else {
        println!(
            "{}: {}",
            if e.visible { "visible" } else { "not visible" },
            e.reason
        );
        for i in &e.instances {
            println!(
                "  {} {} {}",
                i.object,
                i.id,
                if i.visible {
                    "(visible)"
                } else {
                    "(not visible)"
                }
            );
            for step in &i.chain {
                println!("    {step}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn docking_apply(a: DockingApplyArgs) -> Result<ExitCode> {
    let DockingApplyArgs { site, file } = a;
    let s = Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
    s.apply_docking(&file)
        .with_context(|| format!("applying docking model {}", file.display()))?;
    println!(
        "docking model applied; the next `berth dock --site {}` routes by it",
        site.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn docking_check(a: DockingCheckArgs) -> Result<ExitCode> {
    let DockingCheckArgs { site, file, json } = a;
    let s = Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
    let file = file.unwrap_or_else(|| site.join("docking.toml"));
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("reading docking model {}", file.display()))?;
    let findings = berth_engine::route::check::check_toml(&text, &s.conn)?;
    // What the model takes out of replication by primary key, said once in full.
    let classes = berth_engine::route::model::DockingModel::from_toml(&text)
        .map(|m| m.classes())
        .unwrap_or_default();
    let is_error = |f: &berth_engine::route::check::Finding| {
        f.severity() == berth_engine::route::check::Severity::Error
    };
    let errors = findings.iter().filter(|f| is_error(f)).count();
    let grants = berth_engine::route::model::DockingModel::from_toml(&text)
        .map(|m| berth_engine::route::check::link_grants(&m))
        .unwrap_or_default();
    if json {
        let list: Vec<_> = findings
            .iter()
            .map(|f| {
                let severity = if is_error(f) { "error" } else { "warning" };
                serde_json::json!({"severity": severity, "message": f.to_string()})
            })
            .collect();
        output::json(
            &serde_json::json!({"file": file, "errors": errors, "findings": list,
                "local": classes.local, "keys": classes.keys, "link_grants": grants}),
        )?;
    } else {
        for f in &findings {
            println!("{f}");
        }
        if !classes.local.is_empty() {
            let names: Vec<&str> = classes.local.iter().map(String::as_str).collect();
            println!(
                "local (in the schema and its migrations, never captured or sent; each site keeps its own rows): {}",
                names.join(", ")
            );
        }
        for (table, key) in &classes.keys {
            println!("{table}: rows identified by key ({})", key.join(", "));
        }
        if grants.is_empty() {
            println!(
                "links: a node's write may link rows only to instances it holds or creates (no node_link grants)"
            );
        } else {
            println!(
                "links: a node's write may link rows only to instances it holds or creates, except:"
            );
            for g in &grants {
                println!("  {g}");
            }
        }
        println!(
            "{}: {} error(s), {} warning(s)",
            file.display(),
            errors,
            findings.len() - errors
        );
    }
    if errors > 0 {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn keys_generate(a: KeysGenerateArgs) -> Result<ExitCode> {
    let KeysGenerateArgs { out, name } = a;
    berth_engine::site::check_name(&name)?;
    let key = SecretKey::generate();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let secret = out.join(format!("{name}.key"));
    let public = out.join(format!("{name}.pub"));
    berth_engine::site::write_secret(&secret, &key.to_text())?;
    std::fs::write(&public, key.public().to_text())
        .with_context(|| format!("writing {}", public.display()))?;
    println!("key id {}", key.public().key_id());
    println!(
        "secret key: {} (keep it private)\npublic key: {}",
        secret.display(),
        public.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `keys show --age-identity`: the site's age identity, for the `age` tool.
pub(crate) fn keys_show_age_identity(a: KeysShowArgs) -> Result<ExitCode> {
    let KeysShowArgs { path, json, .. } = a;
    let secret = load_secret(&if path.is_dir() {
        path.join("keys").join("site.key")
    } else {
        path.clone()
    })?;
    let id = berth_bundle::seal::identity_text(&secret)?;
    if json {
        output::json(&serde_json::json!({"age_identity": id}))?;
    } else {
        println!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn keys_show(a: KeysShowArgs) -> Result<ExitCode> {
    if a.age_identity {
        return keys_show_age_identity(a);
    }
    let KeysShowArgs { path, json, .. } = a;
    let public = load_public(&path)?;
    // What bundles for this key are sealed to (SPEC 3.4): a standard age recipient.
    let age = berth_bundle::seal::recipient_text(&public)?;
    if json {
        output::json(
            &serde_json::json!({"key_id": public.key_id().to_string(), "public_key": public.to_hex(), "age_recipient": age}),
        )?;
    } else {
        println!(
            "key id     {}\npublic key {}\nage        {age}",
            public.key_id(),
            public.to_hex()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn repair(a: RepairArgs) -> Result<ExitCode> {
    let mut s =
        Site::open(&a.site).with_context(|| format!("opening site {}", a.site.display()))?;
    if let Some(id) = a.reapply {
        let k = berth_engine::replica::reapply(&mut s, id)?;
        if a.json {
            output::json(&k)?;
        } else {
            println!(
                "kept row {id} of {} {} written back as a local change: the next dock \
                 sends it to central",
                k.table, k.key
            );
        }
    } else if let Some(id) = a.discard {
        let k = berth_engine::replica::discard(&s.conn, id)?;
        if a.json {
            output::json(&k)?;
        } else {
            println!("kept row {id} of {} {} forgotten", k.table, k.key);
        }
    } else {
        let kept = berth_engine::replica::kept(&s.conn)?;
        if a.json {
            output::json(&kept)?;
        } else {
            output::kept(&kept);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn bundle_inspect(a: BundleInspectArgs) -> Result<ExitCode> {
    let BundleInspectArgs { file, json } = a;
    let label = file_label(&file);
    let mut f = File::open(&file).with_context(|| format!("opening {}", file.display()))?;
    if transports::is_sealed(&mut f).with_context(|| format!("reading {}", file.display()))? {
        return output::sealed(&file, json).map(|()| ExitCode::SUCCESS);
    }
    let b = Bundle::open(f, &label, &Limits::default())?;
    if json {
        output::json(b.manifest())?
    } else {
        output::manifest(&file, b.manifest())
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn bundle_verify(a: BundleVerifyArgs) -> Result<ExitCode> {
    let BundleVerifyArgs { file, trust } = a;
    let label = file_label(&file);
    let f = File::open(&file).with_context(|| format!("opening {}", file.display()))?;
    let mut keys = Vec::new();
    for t in &trust {
        keys.push(parse_trust(t)?);
    }
    let result = Bundle::open(f, &label, &Limits::default()).and_then(|b| {
        // A key file does not say which site it belongs to: trust each for the site
        // the manifest names; the signature still has to match.
        let mut tk = TrustedKeys::new();
        for (site, k) in &keys {
            let site = site
                .clone()
                .unwrap_or_else(|| b.manifest().sender.site.clone());
            tk.add(TrustedKey {
                public: k.clone(),
                site,
                kinds: None,
            });
        }
        let mut v = b.verify(&tk)?;
        v.check_all_entries()?;
        Ok(v.manifest().clone())
    });
    match result {
        Ok(m) => println!(
            "ok: {label} signed by {} ({}), {} entries verified",
            m.sender.site,
            m.sender.key_id,
            m.entries.len()
        ),
        Err(e) => {
            println!("invalid ({}): {e}", e.kind().as_str());
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn sample_generate(a: SampleGenerateArgs) -> Result<ExitCode> {
    let SampleGenerateArgs {
        scale,
        seed,
        out,
        json,
    } = a;
    let summary = sample::write(&out, scale, seed)?;
    if json {
        output::json(&summary)?;
    } else {
        sample::print(&summary);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn node_set(a: NodeSetArgs) -> Result<ExitCode> {
    let NodeSetArgs {
        name,
        site,
        attrs,
        unset,
        json,
    } = a;
    let s = Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
    let attrs: BTreeMap<String, String> = attrs.into_iter().collect();
    let a = enroll::set_attributes(&s, &name, &attrs, &unset)
        .with_context(|| format!("setting {name}'s attributes"))?;
    if json {
        output::json(&a)?;
    } else if a.attributes == a.before {
        println!("{name}'s attributes are unchanged");
    } else {
        let text = |m: &BTreeMap<String, String>| {
            let v: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        println!(
            "{name}'s attributes: {} (were {})",
            text(&a.attributes),
            text(&a.before)
        );
        println!(
            "next: `berth dock --site {} --via FOLDER` routes by them: rows they show arrive at {name}, rows they hide leave",
            site.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn keys_admin(a: KeysAdminArgs) -> Result<ExitCode> {
    let KeysAdminArgs {
        site,
        name,
        key,
        list,
        json,
    } = a;
    let s = Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
    if let (Some(name), Some(key)) = (name, key) {
        let a = berth_engine::keychain::add_admin(&s, &name, &load_public(&key)?)?;
        if !json {
            println!("admin {} registered (key {})", a.name, a.key_id);
        }
    }
    let all = berth_engine::keychain::admins(&s.conn)?;
    if json {
        output::json(&all)?;
    } else if list {
        for a in &all {
            println!("{:<16} {}", a.name, a.key_id);
        }
        if all.is_empty() {
            println!("no admin keys registered");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn conflicts(a: ConflictsArgs) -> Result<()> {
    use berth_engine::conflict::{self, Side};
    if let Some(ConflictsCmd::Resolve {
        id,
        take,
        site,
        json,
    }) = a.action
    {
        let mut s =
            Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
        let side = match take {
            Take::Node => Side::Node,
            Take::Central => Side::Central,
        };
        let r = conflict::resolve(&mut s, id, side)
            .with_context(|| format!("resolving conflict #{id}"))?;
        if json {
            output::json(&r)?;
        } else {
            output::resolution(&r, &site);
        }
        return Ok(());
    }
    let Some(site) = a.site else {
        bail!("give --site SITE");
    };
    let s = Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
    let c = conflict::conflicts(&s)?;
    let o = conflict::overrides(&s)?;
    if a.json {
        output::json(&serde_json::json!({"conflicts": c, "overrides": o}))
    } else {
        output::conflicts(&c, &o, &site);
        Ok(())
    }
}

pub(crate) fn file_label(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

pub(crate) fn find_request(via: &Path, name: &str) -> Result<PathBuf> {
    let found = transport::list(via, Some("all"))?;
    found
        .into_iter()
        .find(|f| f.sender == name && f.seq == 0)
        .map(|f| f.path)
        .ok_or_else(|| {
            berth_engine::EngineError::NoEnrollment {
                name: name.to_string(),
                folder: via.to_path_buf(),
            }
            .into()
        })
}

/// `SITE=KEYFILE`, a site folder (bound to its name), or a bare key file (any site).
pub(crate) fn parse_trust(arg: &str) -> Result<(Option<String>, PublicKey)> {
    if let Some((site, file)) = arg.split_once('=')
        && berth_bundle::naming::is_valid_site_name(site)
    {
        return Ok((Some(site.to_string()), load_public(Path::new(file))?));
    }
    let path = Path::new(arg);
    if path.is_dir() {
        let site = Site::open(path).with_context(|| format!("reading site {}", path.display()))?;
        return Ok((Some(site.name().to_string()), site.public_key()));
    }
    Ok((None, load_public(path)?))
}

/// Reads a secret key file (`berth keys generate`'s `.key`), for signing as an admin.
pub(crate) fn load_secret(path: &Path) -> Result<SecretKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    SecretKey::from_text(&text)
        .with_context(|| format!("{} is not a secret key file", path.display()))
}

pub(crate) fn load_public(path: &Path) -> Result<PublicKey> {
    let file = if path.is_dir() {
        path.join("keys").join("site.pub")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("reading key file {}", file.display()))?;
    if let Ok(k) = PublicKey::from_text(&text) {
        return Ok(k);
    }
    let k = SecretKey::from_text(&text)
        .with_context(|| format!("{} is not a berth key file", file.display()))?;
    Ok(k.public())
}
