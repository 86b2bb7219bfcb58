//! The layer check (issue 21): every module of the engine may use only the modules below it
//! in the table of layers in `lib.rs`, and those listed before it in its own layer. The
//! table is read from `lib.rs` itself, so the documentation and the check cannot drift.
//!
//! A module's uses are the `crate::` paths in its code (comments and its `#[cfg(test)]`
//! module left out): `use crate::a::b`, `use crate::{a, b::c}` and paths written inline.
//! A unit is a row of the table: a top-level module, or one of its files when the table
//! lists it on its own (`route::model`); a path or a file belongs to the longest unit that
//! prefixes it.
//!
//! The uses that still go the wrong way are listed in [`KNOWN`]: the check fails when a new
//! one appears, and when one of them is gone (so the list only shrinks).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Uses that go up the layers today, each to be removed (from, to).
const KNOWN: &[(&str, &str)] = &[];

/// The units in order, bottom first, from the layer table in `lib.rs`: lines
/// `//! | n. name | `unit`, `unit` |`.
fn units(lib: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! | ") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').collect();
        let Some(mods) = cells.get(1) else { continue };
        for part in mods.split(',') {
            let name = part.trim().trim_matches('`');
            if !name.is_empty() && part.trim().starts_with('`') {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// The unit a module path (`route::router::links`, `merge`) belongs to.
fn unit_of<'u>(path: &[&str], units: &'u [String]) -> Option<&'u str> {
    units
        .iter()
        .filter(|u| {
            let segs: Vec<&str> = u.split("::").collect();
            path.len() >= segs.len() && path[..segs.len()] == segs[..]
        })
        .max_by_key(|u| u.len())
        .map(String::as_str)
}

/// The code of a file without comments and without its `#[cfg(test)] mod tests` (which
/// always comes last in this crate).
fn code(src: &str) -> String {
    let src = match src.find("#[cfg(test)]\nmod tests") {
        Some(i) => &src[..i],
        None => src,
    };
    let mut out = Vec::new();
    // Inside an inline `mod x { .. }`, `super::` is the file's own module.
    let mut inline: Option<String> = None;
    for l in src.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let l = l.find(" // ").map_or(l, |i| &l[..i]);
        let trimmed = l.trim_start();
        let indent = &l[..l.len() - trimmed.len()];
        if inline.is_none()
            && (trimmed.starts_with("mod ") || trimmed.starts_with("pub mod "))
            && trimmed.ends_with('{')
        {
            inline = Some(format!("{indent}}}"));
        } else if inline.as_deref() == Some(l.trim_end()) {
            inline = None;
        }
        out.push(if inline.is_some() {
            l.replace("super::", "self::")
        } else {
            l.to_string()
        });
    }
    out.join("\n")
}

/// Every module path named after `marker` (`crate::`, `super::`) in `code`, groups
/// expanded, each prefixed by `base` (the module `super` stands for).
fn used_paths(code: &str, marker: &str, base: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(marker) {
        // `super::super::` and `crate::` inside another path are not this marker.
        let before = rest[..i].chars().next_back();
        rest = &rest[i + marker.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        expand(rest, base.to_vec(), &mut out);
    }
    out
}

/// The submodules a file declares in files of their own (`mod x;`, `pub mod x;`).
fn children(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            let name = l.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.to_string())
        })
        .collect()
}

/// Reads one path (and the group that may follow it) at the start of `s`, each complete
/// path prefixed by `prefix`.
fn expand(s: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    let mut s = s;
    loop {
        if let Some(inner) = s.strip_prefix('{') {
            // Split the group at its top-level commas.
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        expand(inner[start..i].trim_start(), path.clone(), out);
                        return;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(inner[start..i].trim_start(), path.clone(), out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        if end == 0 {
            break;
        }
        path.push(s[..end].to_string());
        s = &s[end..];
        match s.strip_prefix("::") {
            Some(r) => s = r,
            None => break,
        }
    }
    if !path.is_empty() {
        out.push(path);
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file (`route/router/links.rs` -> `route::router::links`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut segs: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if segs.last().is_some_and(|s| s == "mod") {
        segs.pop();
    }
    segs
}

/// (from, to) -> the files with such a use, for every use that does not go down.
fn upward_uses() -> BTreeMap<(String, String), BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let units = units(&lib);
    let rank: BTreeMap<&str, usize> = units
        .iter()
        .enumerate()
        .map(|(i, u)| (u.as_str(), i))
        .collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut bad: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let module = module_of(&src, &file);
        if module == ["lib"] || module == ["layers"] {
            continue;
        }
        let m: Vec<&str> = module.iter().map(String::as_str).collect();
        let from = unit_of(&m, &units)
            .unwrap_or_else(|| panic!("{} is in no layer of lib.rs", file.display()));
        let text = std::fs::read_to_string(&file).unwrap();
        let code = code(&text);
        let mut uses = used_paths(&code, "crate::", &[]);
        // `super::x` in module `a::b` (file a/b.rs) is `a::x`; in `a` (a/mod.rs), `x`.
        let parent = &module[..module.len() - 1];
        uses.extend(used_paths(&code, "super::", parent));
        // `child::x` in a module that declares `mod child;`.
        // A re-export (`pub use child::x;`) is the module's surface, not a use of the child.
        let own: String = code
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                !(l.starts_with("pub use ") || l.starts_with("pub(crate) use "))
            })
            .collect::<Vec<_>>()
            .join("\n");
        for child in children(&code) {
            let marker = format!("{child}::");
            let mut base = module.clone();
            base.push(child);
            uses.extend(used_paths(&own, &marker, &base));
        }
        for used in uses {
            let u: Vec<&str> = used.iter().map(String::as_str).collect();
            // `crate::Result`, `crate::EngineError`: the crate root's re-exports of `error`.
            let to = unit_of(&u, &units).unwrap_or("error");
            if to != from && rank[to] > rank[from] {
                let shown = file.strip_prefix(&src).unwrap().display().to_string();
                bad.entry((from.to_string(), to.to_string()))
                    .or_default()
                    .insert(shown);
            }
        }
    }
    bad
}

#[test]
fn the_layer_table_names_every_module_once() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let units = units(&lib);
    let distinct: BTreeSet<&String> = units.iter().collect();
    assert_eq!(
        distinct.len(),
        units.len(),
        "a unit is listed twice: {units:?}"
    );
    assert!(units.len() > 20, "the layer table was not found: {units:?}");
    for line in lib.lines() {
        let Some(name) = line.strip_prefix("pub mod ").or(line.strip_prefix("mod ")) else {
            continue;
        };
        let name = name.trim_end_matches(';');
        if name != "layers" {
            assert!(
                units.iter().any(|u| u.split("::").next() == Some(name)),
                "module {name} is in no layer of the table in lib.rs"
            );
        }
    }
}

#[test]
fn no_module_uses_a_layer_above_it() {
    let bad = upward_uses();
    let known: BTreeSet<(String, String)> = KNOWN
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<String> = bad
        .iter()
        .filter(|(k, _)| !known.contains(*k))
        .map(|((a, b), files)| {
            format!(
                "{a} -> {b} (in {})",
                files.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    let gone: Vec<String> = known
        .iter()
        .filter(|k| !bad.contains_key(*k))
        .map(|(a, b)| format!("{a} -> {b}"))
        .collect();
    assert!(
        new.is_empty(),
        "uses that go up the layers of lib.rs (move the code down or the use up):\n  {}",
        new.join("\n  ")
    );
    assert!(
        gone.is_empty(),
        "these uses are gone: take them out of layers::KNOWN:\n  {}",
        gone.join("\n  ")
    );
}

#[test]
fn the_path_reader_expands_groups() {
    let paths = used_paths(
        "use crate::{a, b::{c, d::e}, f::g::{self}};\nx(crate::h::i(1));",
        "crate::",
        &[],
    );
    let shown: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(shown, ["a", "b::c", "b::d::e", "f::g::self", "h::i"]);
    let up = used_paths(
        "use super::apply::{Cols, read_row};",
        "super::",
        &["merge".into()],
    );
    let shown: Vec<String> = up.iter().map(|p| p.join("::")).collect();
    assert_eq!(shown, ["merge::apply::Cols", "merge::apply::read_row"]);
}
