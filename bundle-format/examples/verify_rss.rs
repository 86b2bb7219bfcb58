#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Verifies every entry of a large bundle and prints this process's peak resident memory,
//! to show that verification runs in bounded memory (far below the payload size).
//!
//! ```text
//! cargo run --release -p berth-bundle --example verify_rss                 # builds 200 MB, then verifies
//! BERTH_BENCH_MB=1000 cargo run --release -p berth-bundle --example verify_rss
//! cargo run --release -p berth-bundle --example verify_rss -- FILE.berth.zip SENDER_PUBLIC_KEY_FILE
//! ```
//!
//! The payload is generated while it is written (never held in memory), so the build phase
//! is bounded too. Before verifying, the peak is reset (Linux: `5` into /proc/self/clear_refs)
//! so that the verify figure is the verify phase's own.

#[path = "../benches/support/textgen.rs"]
mod textgen;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::PathBuf;
use std::time::Instant;

use berth_bundle::{
    Bundle, BundleHeader, BundleWriter, Compression, Limits, Party, PublicKey, SecretKey,
    TrustedKey, TrustedKeys,
};

const ENTRIES: usize = 8;

/// A field of /proc/self/status (`VmHWM` = peak RSS, `VmRSS` = current), or "n/a".
fn proc_status(field: &str) -> String {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(&format!("{field}:")))
                .map(|l| l[field.len() + 1..].trim().to_owned())
        })
        .unwrap_or_else(|| "n/a".to_owned())
}

fn reset_peak() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn build(path: &PathBuf, total: u64) -> PublicKey {
    let key = SecretKey::generate();
    let header = BundleHeader {
        sender: Party {
            site: "alice".into(),
            key_id: key.public().key_id(),
        },
        recipients: vec!["hq".into()],
        created: 1_700_000_000,
        bundle_id: None,
        stream: None,
        schema_checksum: None,
        software_level: None,
        critical: vec![],
        extensions: BTreeMap::new(),
    };
    let mut w = BundleWriter::new(File::create(path).unwrap(), header).unwrap();
    for (i, (name, style, size)) in textgen::layout(total, ENTRIES).into_iter().enumerate() {
        let data = textgen::TextGen::new(i as u64 + 1, style, size);
        w.add_entry(&name, "dump", Compression::Deflate, data)
            .unwrap();
    }
    let (file, _) = w.finish(&key).unwrap();
    file.sync_all().unwrap();
    key.public()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let _dir;
    let (path, public) = match args.as_slice() {
        [] => {
            let mb = std::env::var("BERTH_BENCH_MB")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(200);
            _dir = tempfile::tempdir().unwrap();
            let path = _dir.path().join("alice_to_hq_0000000001.berth.zip");
            let t = Instant::now();
            let public = build(&path, mb * 1_000_000);
            println!(
                "built {} MB of payload into {} ({:.1} MB) in {:.1}s; peak RSS while building: {}",
                mb,
                path.display(),
                fs::metadata(&path).unwrap().len() as f64 / 1e6,
                t.elapsed().as_secs_f64(),
                proc_status("VmHWM")
            );
            (path, public)
        }
        [bundle, key_file] => {
            let text = fs::read_to_string(key_file).unwrap();
            (PathBuf::from(bundle), PublicKey::from_text(&text).unwrap())
        }
        _ => {
            eprintln!("usage: verify_rss [BUNDLE SENDER_PUBLIC_KEY_FILE]");
            std::process::exit(2);
        }
    };

    let reset = reset_peak();
    let t = Instant::now();
    let mut file = File::open(&path).unwrap();
    let bundle = Bundle::open(&mut file, "verify_rss", &Limits::default()).unwrap();
    let mut trust = TrustedKeys::new();
    trust.add(TrustedKey {
        public,
        site: bundle.manifest().sender.site.clone(),
        kinds: None,
    });
    let mut bundle = bundle.verify(&trust).unwrap();
    bundle.check_all_entries().unwrap();
    let payload: u64 = bundle.manifest().entries.iter().map(|e| e.size).sum();
    let entries = bundle.manifest().entries.len();
    drop(bundle);
    println!(
        "verified {entries} entries, {:.1} MB of payload ({:.1} MB file) in {:.2}s",
        payload as f64 / 1e6,
        fs::metadata(&path).unwrap().len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    println!(
        "peak RSS while verifying (VmHWM{}): {}; current VmRSS: {}",
        if reset {
            ", reset after building"
        } else {
            ", NOT reset: includes building"
        },
        proc_status("VmHWM"),
        proc_status("VmRSS")
    );
}
