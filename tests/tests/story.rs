//! A multi-site story: central and three nodes make random changes and dock in random order,
//! with bundles lost and duplicated, until nothing flows; then every replica equals central.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_tests::{SCHEMA, World};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::fs;

const DATA: &str = "INSERT INTO account VALUES ('a1', 'Acme', 'north');
INSERT INTO account VALUES ('a2', 'Globex', 'south');
INSERT INTO opty VALUES ('o1', 'a1', 'Big deal', 'Keith Palmer', 1000, NULL);";

const SITES: [&str; 4] = ["hq", "n1", "n2", "n3"];

fn random_write(w: &World, rng: &mut StdRng) {
    let site = SITES[rng.random_range(0..SITES.len())];
    let id = format!("k{}", rng.random_range(0..12));
    let word = ["red", "green", "blue", "Carl Lake", "Greg Emerson"][rng.random_range(0..5)];
    let sql = match rng.random_range(0..7) {
        0 | 1 => format!(
            "INSERT INTO account VALUES ('{id}', '{word}', 'r{}') ON CONFLICT(id) DO UPDATE SET name = excluded.name",
            rng.random_range(0..3)
        ),
        2 | 3 => format!("UPDATE account SET name = '{word}' WHERE id = '{id}'"),
        4 => format!("UPDATE account SET region = '{word}', name = '{id}' WHERE id = '{id}'"),
        5 => format!("DELETE FROM account WHERE id = '{id}'"),
        _ => format!(
            "INSERT INTO opty_emp VALUES ('o1', '{id}', '{word}') ON CONFLICT DO UPDATE SET role = excluded.role"
        ),
    };
    w.exec(site, &sql);
}

fn story(seed: u64) {
    let w = World::new(SCHEMA, DATA, &["n1", "n2", "n3"]);
    // Every collision policy takes its turn; convergence must hold under each.
    let policy = ["central-wins", "node-wins", "latest-wins"][(seed % 3) as usize];
    w.set_policy("account", policy);
    w.set_policy("opty_emp", policy);
    let mut rng = StdRng::seed_from_u64(seed);
    let stash = w.root.path().join("stash");
    fs::create_dir_all(&stash).unwrap();
    for _ in 0..80 {
        match rng.random_range(0..10) {
            0..=5 => random_write(&w, &mut rng),
            6 | 7 => {
                let site = SITES[rng.random_range(0..SITES.len())];
                let r = w.dock(site);
                for path in r.written {
                    match rng.random_range(0..6) {
                        // Lost on the way.
                        0 => fs::remove_file(&path).unwrap(),
                        // Kept aside to be delivered again later.
                        1 => {
                            fs::copy(&path, stash.join(path.file_name().unwrap())).unwrap();
                        }
                        _ => {}
                    }
                }
            }
            8 => {
                // A stale copy turns up again.
                let entries: Vec<_> = fs::read_dir(&stash)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                if !entries.is_empty() {
                    let p = &entries[rng.random_range(0..entries.len())];
                    fs::copy(p, w.via.join(p.file_name().unwrap())).unwrap();
                }
            }
            _ => {
                let site = SITES[rng.random_range(0..SITES.len())];
                w.dock(site);
            }
        }
    }
    let mut order: Vec<String> = vec!["n1".into(), "n2".into(), "n3".into()];
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    w.settle_in_order(&order);
    let hq = w.dump("hq");
    if std::env::var("BERTH_KEEP").is_ok() && ["n1", "n2", "n3"].iter().any(|n| w.dump(n) != hq) {
        eprintln!("seed {seed}: sites kept in {}", w.root.path().display());
        let w = std::mem::ManuallyDrop::new(w);
        panic!("seed {seed} diverged; inspect {}", w.root.path().display());
    }
    for n in ["n1", "n2", "n3"] {
        assert_eq!(
            w.dump(n),
            hq,
            "seed {seed}: {n} differs from central (replay: BERTH_STORY_SEED={seed})"
        );
    }
    // Every node change is merged or recorded: nothing is left unacknowledged.
    for n in ["n1", "n2", "n3"] {
        let st = berth_engine::status::status(&w.open(n)).unwrap();
        assert!(st.held.is_empty(), "seed {seed}: {n} holds {:?}", st.held);
        assert_eq!(
            st.peers[0].pending_out, 0,
            "seed {seed}: {n} has unacknowledged changes"
        );
    }
}

#[test]
fn random_story_converges() {
    berth_tests::for_seeds("BERTH_STORY_SEED", "BERTH_STORY_SEEDS", 4, story);
}
